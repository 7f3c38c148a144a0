"""User hooks (``before_send``, ``on_drop``, ``consent``) in every sender mode: one that
tracks from inside itself never deadlocks or loops, and none holds the event loop.

Each scenario runs in a daemon thread joined with a hard timeout: a deadlock fails its
test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import LiveHub, settings
from starlette.types import Receive, Scope, Send

from layersync_middleware import LayerSync, LayerSyncMiddleware
from layersync_middleware._event import Event
from layersync_middleware.testing import MemoryTransport

MODES = ["sync", "thread", "asyncio"]
HARD_TIMEOUT = 20.0  # seconds; a scenario takes well under one
ATC = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
MATCHER = ["/api/cart/*"]
WRONG_KEY = "sk_test_not_this_sites_key"  # the hub refuses it: every event is dropped


def eventually(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.02)


def without_deadlock(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` in a daemon thread, joined with a hard timeout; re-raise what it raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            scenario()
        except BaseException as exc:  # re-raised in the test's own thread
            failures.append(exc)

    thread = threading.Thread(target=run, name="hook-scenario", daemon=True)
    thread.start()
    thread.join(HARD_TIMEOUT)
    assert not thread.is_alive(), f"deadlocked: the scenario still runs after {HARD_TIMEOUT} s"
    if failures:
        raise failures[0]


def run_app(mode: str, client: LayerSync, act: Callable[[], object], done: Callable[[], bool]) -> None:
    """Run the app's code ``act`` (a function, or an ``async def`` for a request through
    the ASGI middleware) as an app of ``mode`` would, wait until ``done()``, then shut the
    client down; all within the hard timeout. ``asyncio``: on an event loop, which keeps
    running meanwhile (the sender is a task on it)."""

    async def on_a_loop() -> None:
        answer = act()
        if inspect.isawaitable(answer):
            await answer
        await asyncio.to_thread(eventually, done, "every event delivered")
        await client.ashutdown(5)

    def in_this_thread() -> None:
        answer = act()
        if inspect.isawaitable(answer):
            asyncio.run(answer)  # type: ignore[arg-type]  # the ASGI app's coroutine
        eventually(done, "every event delivered")
        client.shutdown(5)

    without_deadlock((lambda: asyncio.run(on_a_loop())) if mode == "asyncio" else in_this_thread)


def tracking_client(mode: str) -> tuple[LayerSync, MemoryTransport]:
    """A client whose ``before_send`` tracks a ``lead`` for every event it sees, the leads
    it tracked included: without a bound it would loop for ever."""
    memory = MemoryTransport()

    def before_send(event: Event) -> Event:
        client.track("lead", {"tracked_for": event["event_name"]})
        return event

    client = LayerSync(settings(sender=mode, matcher=MATCHER), transport=memory, before_send=before_send)
    return client, memory


def names(memory: MemoryTransport) -> list[str]:
    return sorted(str(e["event_name"]) for e in memory.events)


def asgi_app(client: LayerSync, **hooks: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return LayerSyncMiddleware(app, client=client, **hooks)


async def add_to_cart(app: Any, requests: int = 1) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://shop.example") as http:
        for i in range(requests):
            headers = {**ATC, "X-LayerSync-Event-Id": f"atc_{i:016d}"}
            assert (await http.post("/api/cart/add", headers=headers)).status_code == 200


# -- item 5: no hook deadlocks or loops ---------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_before_send_that_tracks_never_deadlocks_or_loops(mode: str) -> None:
    # N5: with sender="sync" this deadlocked on a module lock; the always-tracking hook
    # recursed until Python's recursion limit in every mode.
    client, memory = tracking_client(mode)

    def act() -> object:
        client.track("purchase")  # before_send runs in the caller
        return add_to_cart(asgi_app(client))  # a paired event: before_send runs on the sender

    run_app(mode, client, act, lambda: len(memory.events) >= 4)
    assert names(memory) == ["add_to_cart", "lead", "lead", "purchase"]
    assert sorted(e["custom_data"]["tracked_for"] for e in memory.named("lead")) == ["add_to_cart", "purchase"]
    # Each lead's own before_send (one hook deep already) may not track again: refused, counted.
    assert client.stats().dropped == {"internal_error": 2}


@pytest.mark.parametrize("mode", MODES)
def test_what_a_before_send_tracks_goes_even_when_it_drops_its_own_event(mode: str) -> None:
    # With sender="sync" an event tracked inside a hook waited for a delivery under way;
    # when the hook dropped its own event there was none, and it waited for the next one.
    memory = MemoryTransport()

    def before_send(event: Event) -> Event | None:
        if event["custom_data"].get("test_order"):
            client.track("test_order_seen")
            return None
        return event

    client = LayerSync(settings(sender=mode), transport=memory, before_send=before_send)

    def act() -> None:
        assert client.track("purchase", {"test_order": True}) is None
        assert client.send("purchase", {"test_order": True}).error == "refused"

    run_app(mode, client, act, lambda: len(memory.events) >= 2)
    assert names(memory) == ["test_order_seen", "test_order_seen"]
    assert client.stats().dropped == {"before_send": 2}


@pytest.mark.parametrize("mode", MODES)
def test_a_consent_that_tracks_never_deadlocks_or_loops(mode: str) -> None:
    client, memory = tracking_client(mode)
    asked: list[Any] = []

    def consent(request: Any) -> bool:
        asked.append(request)
        client.track("consent_asked")
        return True

    run_app(mode, client, lambda: add_to_cart(asgi_app(client, consent=consent)), lambda: len(memory.events) >= 4)
    assert len(asked) == 1
    assert names(memory) == ["add_to_cart", "consent_asked", "lead", "lead"]
    assert client.stats().dropped == {"internal_error": 2}


@pytest.mark.parametrize("mode", MODES)
def test_an_on_drop_that_tracks_never_loops(hub: LiveHub, mode: str) -> None:
    # The hub refuses this key: every event is dropped, and this on_drop tracks one more
    # for each drop it is told of. Before, each of those was dropped and told of in turn,
    # for ever (about 20 a second in a thread, in a busy loop with sender="sync").
    told: list[str] = []

    def on_drop(event: Event, reason: str) -> None:
        told.append(f"{event['event_name']}:{reason}")
        client.track("drop_noticed")

    def before_send(event: Event) -> Event:
        if event["event_name"] == "drop_noticed":
            client.track("lead")  # on_drop, then before_send: two hooks deep, refused
        return event

    client = LayerSync(
        settings(sender=mode, api_url=hub.url, secret_key=WRONG_KEY, timeout_ms=3000),
        on_drop=on_drop,
        before_send=before_send,
    )

    def both_rejected() -> bool:
        return client.stats().dropped.get("rejected", 0) >= 2

    run_app(mode, client, lambda: client.track("purchase"), both_rejected)
    # What on_drop tracked was dropped too, and counted, but on_drop is not told again.
    assert told == ["purchase:rejected"]
    assert client.stats().dropped == {"rejected": 2, "internal_error": 1}


# -- item 6: the asyncio sender never holds the loop ---------------------------------------------
class LagProbe:
    """How late ``asyncio.sleep(0.005)`` wakes up on this loop, at worst."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.samples = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - started - 0.005)
            self.samples += 1


SLOW_HOOK = 0.2  # seconds: what the review's hook took


@pytest.mark.parametrize("hook", ["before_send", "on_drop"])
def test_slow_hooks_never_hold_the_event_loop(hub: LiveHub, hook: str) -> None:
    # N6: the asyncio sender built paired events, and so ran before_send, on the loop: a
    # 200 ms hook stalled it for 400 ms. on_drop ran there too.
    called: list[str] = []

    def slow(event: Event) -> Event:
        time.sleep(SLOW_HOOK)
        called.append(str(event["event_name"]))
        return event

    def slow_on_drop(event: Event, reason: str) -> None:
        slow(event)

    options = settings(sender="asyncio", api_url=hub.url, matcher=MATCHER)
    if hook == "before_send":
        client = LayerSync(options, before_send=slow)
    else:
        client = LayerSync(options, secret_key=WRONG_KEY, on_drop=slow_on_drop)  # every event dropped
    probe = LagProbe()
    requests = 3

    async def shop() -> None:
        probing = asyncio.create_task(probe.run())
        await add_to_cart(asgi_app(client), requests)
        await asyncio.to_thread(eventually, lambda: len(called) == requests, f"{hook} called for each event")
        probing.cancel()
        await client.ashutdown(5)

    without_deadlock(lambda: asyncio.run(shop()))
    assert probe.samples > 10
    # 50 ms is generous for a loaded machine and far below one 200 ms hook.
    assert probe.worst < 0.05, f"the loop was held {probe.worst * 1000:.0f} ms"
    if hook == "before_send":
        assert len(hub.events("server")) == requests
    else:
        assert client.stats().dropped == {"rejected": requests}
