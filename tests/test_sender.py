from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

import pytest
from helpers import SITE, LiveHub, settings

from layersync_middleware import LayerSync
from layersync_middleware._event import Event, build_event, new_event_id
from layersync_middleware._sender import EventQueue, Sender, SyncSender, ThreadSender, _Item
from layersync_middleware._transport import HTTPTransport, Outcome
from layersync_middleware.testing import MemoryTransport


def event(name: str = "add_to_cart", **props: Any) -> Event:
    return build_event(
        site_id=SITE.site_id,
        event_name=name,
        event_id=new_event_id(name),
        props=props,
        user_data={},
        event_source_url=None,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A transport answering from a script of actions, recording what it was given."""

    def __init__(self, *script: Outcome) -> None:
        self.script = list(script)
        self.calls: list[list[str]] = []

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        self.calls.append([e["event_id"] for e in events])
        outcome = self.script.pop(0) if self.script else Outcome("ok", 200)
        return [outcome] * len(events)

    def close(self) -> None:
        pass


def sync_sender(transport: Any, clock: Clock | None = None, **options: Any) -> SyncSender:
    return SyncSender(settings(sender="sync", **options), lambda: transport, clock=clock or Clock())


# -- the queue --------------------------------------------------------------------------------
def test_full_queue_evicts_lowest_priority_oldest_first() -> None:
    q = EventQueue(3)
    items = [_Item(event(n), i, 0.0) for i, n in enumerate(["page_view", "add_to_cart", "page_view"])]
    for it in items:
        assert q.push(it) is None
    purchase = _Item(event("purchase"), 9, 0.0)
    assert q.push(purchase) is items[0]  # the oldest page_view goes
    assert [i.name for i in q] == ["purchase", "add_to_cart", "page_view"]
    late_view = _Item(event("page_view"), 10, 0.0)
    assert q.push(late_view) is items[2]  # same priority: the older one goes
    lowest = _Item(event("search"), 11, 0.0)
    assert q.push(lowest) is late_view  # a higher-priority newcomer evicts the page_view
    assert [i.name for i in q] == ["purchase", "add_to_cart", "search"]


def test_a_newcomer_lower_than_everything_is_itself_dropped() -> None:
    q = EventQueue(1)
    q.push(_Item(event("purchase"), 0, 0.0))
    newcomer = _Item(event("page_view"), 1, 0.0)
    assert q.push(newcomer) is newcomer
    assert len(q) == 1


def test_queue_full_drops_are_counted_and_reported() -> None:
    drops: list[tuple[str, str]] = []
    sender = ThreadSender(
        settings(max_queue_size=2), lambda: Scripted(), on_drop=lambda e, r: drops.append((e["event_name"], r))
    )
    sender._wake = lambda: None  # type: ignore[method-assign]  # keep everything queued
    for name in ["page_view", "purchase", "purchase"]:
        sender.submit(event(name))
    assert drops == [("page_view", "queue_full")]
    assert sender.stats().dropped == {"queue_full": 1} and sender.stats().queued == 2


# -- de-duplication ------------------------------------------------------------------------------
def test_a_pair_is_forwarded_once() -> None:
    transport = MemoryTransport()
    sender = sync_sender(transport)
    e = event()
    assert sender.submit(e)
    assert not sender.submit(dict(e))
    other_name = dict(e, event_name="purchase")
    assert sender.submit(other_name)
    assert len(transport.events) == 2 and sender.stats().duplicates == 1


# -- retries and backoff --------------------------------------------------------------------------
def test_retries_back_off_quickly_then_by_the_ladder() -> None:
    clock = Clock()
    transport = Scripted(*[Outcome("retry", 503, None, "HTTP 503")] * 5)
    sender = sync_sender(transport, clock, max_retries=2)
    e = event("purchase")
    sender.submit(e)
    delays = []
    for _ in range(5):
        [item] = list(sender._queue)
        delays.append(item.due - clock.now)
        clock.now = item.due
        sender.flush(1)
    assert 0.4 <= delays[0] <= 0.6  # quick retries first: 0.5 s, 1 s (+-20 %)
    assert 0.8 <= delays[1] <= 1.2
    assert 4.0 <= delays[2] <= 6.0  # then the browser SDK's ladder: 5 s, 30 s, 120 s
    assert 24 <= delays[3] <= 36
    assert 96 <= delays[4] <= 144
    assert len(transport.calls) == 6 and sender.stats().queued == 0 and sender.stats().sent == 1
    assert sender.stats().retried == 5


def test_retry_after_is_honoured_and_pauses_everything() -> None:
    clock = Clock()
    transport = Scripted(Outcome("retry", 429, 120.0, "HTTP 429"))
    sender = sync_sender(transport, clock)
    sender.submit(event())
    [item] = list(sender._queue)
    assert item.due - clock.now >= 120
    sender.submit(event())  # the hub asked for a pause: a new event waits too
    assert len(transport.calls) == 1
    clock.now += 121
    sender._drain_inline(clock.now + 5, flush_only=False)
    assert len(transport.calls) == 2 and len(transport.calls[1]) == 2


def test_final_rejection_is_not_retried() -> None:
    drops: list[str] = []
    transport = Scripted(Outcome("drop", 422, None, "HTTP 422"))
    sender = SyncSender(settings(sender="sync"), lambda: transport, on_drop=lambda e, r: drops.append(r), clock=Clock())
    sender.submit(event())
    assert drops == ["rejected"] and sender.stats().queued == 0 and len(transport.calls) == 1


def test_events_expire_by_their_names_policy() -> None:
    clock = Clock()
    drops: list[tuple[str, str]] = []
    transport = Scripted(*[Outcome("retry", 500, None, "HTTP 500")] * 100)
    sender = SyncSender(
        settings(sender="sync", max_retries=0),
        lambda: transport,
        on_drop=lambda e, r: drops.append((e["event_name"], r)),
        clock=clock,
    )
    sender.submit(event("page_view"))  # 6 h / 3 attempts
    sender.submit(event("purchase"))  # 7 d / 20 attempts
    for _ in range(40):
        due = min((i.due for i in sender._queue), default=None)
        if due is None:
            break
        clock.now = due
        sender._drain_inline(clock.now + 1, flush_only=False)
    assert ("page_view", "retries_exhausted") in drops
    purchase_drop = [r for n, r in drops if n == "purchase"]
    assert purchase_drop and purchase_drop[0] in ("expired", "retries_exhausted")
    assert clock.now - 1000 > 3 * 86400  # the purchase was kept trying for days


def test_a_failing_batch_does_not_stall_the_rest() -> None:
    clock = Clock()

    class Picky(Scripted):
        def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
            self.calls.append([e["event_id"] for e in events])
            return [Outcome("retry", 500) if e["event_name"] == "lead" else Outcome("ok", 200) for e in events]

    transport = Picky()
    sender = sync_sender(transport, clock)
    sender.submit(event("lead"))
    for _ in range(5):
        sender.submit(event("add_to_cart"))
    assert sender.stats().sent == 5 and sender.stats().queued == 1


def test_per_event_batch_outcomes() -> None:
    class Half(Scripted):
        def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
            self.calls.append([e["event_id"] for e in events])
            return [Outcome("ok", 200), Outcome("retry", 200), Outcome("drop", 200)][: len(events)]

    sender = ThreadSender(settings(), lambda: Half(), clock=Clock())
    sender._wake = lambda: None  # type: ignore[method-assign]
    for name in ("purchase", "lead", "add_to_cart"):
        sender.submit(event(name))
    sender.flush(1)
    stats = sender.stats()
    assert stats.sent == 1 and stats.queued == 1 and stats.dropped == {"rejected": 1}


def test_batches_respect_count_and_byte_limits() -> None:
    sizes: list[int] = []

    class Sizing(Scripted):
        def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
            sizes.append(sum(len(b) + 1 for b in bodies))
            return super().send(events, bodies, timeout)

    transport = Sizing()
    sender = ThreadSender(settings(max_queue_size=500), lambda: transport, clock=Clock())
    sender._wake = lambda: None  # type: ignore[method-assign]
    for _ in range(120):
        sender.submit(event("lead"))
    for _ in range(10):
        sender.submit(event("lead", pad="x" * 30_000))
    assert sender.flush(5) == 0
    counts = [len(c) for c in transport.calls]
    assert max(counts) == 50 and sum(counts) == 130
    assert max(sizes) <= 100 * 1024
    assert len(transport.calls) >= 3 + 10 // 3  # 120 small ones in >= 3 batches, the big ones 3 at a time


def test_an_oversized_event_is_dropped_as_invalid() -> None:
    drops: list[str] = []
    sender = SyncSender(
        settings(sender="sync"), lambda: Scripted(), on_drop=lambda e, r: drops.append(r), clock=Clock()
    )
    sender.submit(event("lead", pad="x" * 200_000))
    assert drops == ["invalid"]


def test_a_raising_transport_or_callback_does_not_break_the_sender() -> None:
    class Broken:
        def send(self, *a: Any) -> list[Outcome]:
            raise RuntimeError("boom")

        def close(self) -> None:
            pass

    def bad_callback(e: Event, r: str) -> None:
        raise ValueError("user bug")

    sender = SyncSender(
        settings(sender="sync", max_queue_size=1), lambda: Broken(), on_drop=bad_callback, clock=Clock()
    )
    assert sender.submit(event("purchase"))
    assert sender.stats().last_error == "RuntimeError" and sender.stats().queued == 1
    sender.submit(event("page_view"))  # queue full -> on_drop raises -> swallowed
    assert sender.stats().dropped == {"queue_full": 1}


# -- the worker thread against the real hub ---------------------------------------------------------
def test_thread_worker_retries_through_500s(hub: LiveHub) -> None:
    hub.faults(mode="500", count=2)
    client = LayerSync(settings(api_url=hub.url))
    eid = client.track("purchase", {"value": 1})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not hub.events("server"):
        time.sleep(0.05)
    [stored] = hub.events("server")
    assert stored["event"]["event_id"] == eid and stored["event"]["client_meta"]["attempts"] == 2
    assert client.stats().retried == 2
    client.shutdown(1)


def test_thread_worker_honours_retry_after(hub: LiveHub) -> None:
    hub.faults(mode="429", count=1, retry_after=1)
    client = LayerSync(settings(api_url=hub.url))
    started = time.monotonic()
    client.track("lead")
    while time.monotonic() - started < 10 and not hub.events("server"):
        time.sleep(0.02)
    assert hub.events("server") and time.monotonic() - started >= 1.0
    client.shutdown(1)


def test_enqueue_stays_fast_while_the_hub_hangs(hub: LiveHub) -> None:
    hub.faults(mode="hang", hang_seconds=5)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=3000, max_queue_size=100))
    started = time.monotonic()
    for _ in range(1000):
        client.track("add_to_cart")
    elapsed = time.monotonic() - started
    # Not a benchmark: one blocking call would take the 3 s timeout by itself.
    assert elapsed < 2.0
    assert client.stats().queued <= 100 and client.stats().dropped.get("queue_full", 0) >= 900
    flushed_at = time.monotonic()
    left = client.shutdown(0.5)
    assert time.monotonic() - flushed_at < 1.0 and left > 0  # never longer than asked, hub or not


def test_flush_never_waits_longer_than_asked(hub: LiveHub) -> None:
    hub.faults(mode="hang", hang_seconds=10)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=5000))
    client.track("purchase")
    started = time.monotonic()
    assert client.flush(0.5) == 1
    assert time.monotonic() - started < 1.0
    hub.faults(mode=None)
    client.shutdown(0.2)


def test_shutdown_interrupts_backoff_and_restarts_lazily(hub: LiveHub) -> None:
    hub.faults(mode="500")
    client = LayerSync(settings(api_url=hub.url, max_retries=0))
    client.track("purchase")
    time.sleep(0.3)  # failed once, now parked for ~5 s
    hub.faults(mode=None)
    started = time.monotonic()
    assert client.shutdown(3) == 0  # shutdown tries parked events now, without waiting out the backoff
    assert time.monotonic() - started < 2
    assert not client.stats().worker_alive
    client.track("lead")  # the worker starts again on next use
    assert client.flush(3) == 0 and len(hub.events("server")) == 2
    client.shutdown(1)


def test_gzip_and_batches_reach_the_hub(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url))
    for i in range(120):
        client.track("view_item", {"item_id": f"SKU-{i}", "description": "long text " * 100})
    assert client.flush(10) == 0
    assert len(hub.events("server")) == 120
    assert client.stats().batches < 120
    client.shutdown(1)


# -- processes ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_its_own_sender(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url))
    client.track("lead", {"who": "parent-before-fork"})
    assert client.flush(3) == 0
    client.sender._stop(5)  # park one event in the parent: no worker, none started
    client.sender._wake = lambda: None  # type: ignore[method-assign]
    parked = client.track("purchase", {"who": "parent-queued"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh queue and worker; the parent's queued event is not its to send
        try:
            del client.sender._wake
            child = client.track("add_to_cart", {"who": "child"})
            left = client.flush(5)
            os.write(write, f"{child} {left} {client.stats().queued}".encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id, left, queued = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    assert (left, queued) == ("0", "0")
    sent = {e["event"]["event_id"]: e["event"]["custom_data"]["who"] for e in hub.events("server")}
    assert sent[child_id] == "child"
    assert parked not in sent  # still the parent's
    del client.sender._wake
    assert client.flush(3) == 0
    assert parked in {e["event"]["event_id"] for e in hub.events("server")}
    client.shutdown(1)


def test_events_are_drained_at_exit(hub: LiveHub) -> None:
    script = textwrap.dedent(f"""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="{SITE.site_id}", secret_key="{SITE.secret_key}", api_url="{hub.url}")
        for i in range(5):
            ls.track("purchase", {{"order_id": f"O-{{i}}"}})
        # no flush: the atexit drain must deliver them
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(e["event"]["custom_data"]["order_id"] for e in hub.events("server")) == [f"O-{i}" for i in range(5)]


def test_exit_with_a_dead_hub_is_bounded_and_says_what_was_lost(hub: LiveHub) -> None:
    script = textwrap.dedent("""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="s", secret_key="sk_x", api_url="http://127.0.0.1:9", shutdown_timeout=1)
        ls.track("purchase")
    """)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 0
    assert "1 undelivered event" in result.stderr


# -- asyncio ---------------------------------------------------------------------------------------------
def test_asyncio_sender_delivers_on_the_loop(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))

    async def main() -> int:
        for i in range(10):
            client.track("add_to_cart", {"n": i})
        assert client.stats().worker_alive
        left = await client.aflush(5)
        await client.ashutdown(1)
        return left

    assert asyncio.run(main()) == 0
    assert len(hub.events("server")) == 10


def test_asyncio_sender_leftovers_go_with_the_sync_flush(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))
    client.track("purchase")  # no running loop: queued
    assert not client.stats().worker_alive
    assert client.flush(3) == 0
    assert len(hub.events("server")) == 1


def test_sender_interface_is_small() -> None:
    public = {n for n in dir(Sender) if not n.startswith("_")}
    assert {"submit", "flush", "shutdown", "stats", "deliver_now"} <= public
    assert isinstance(HTTPTransport(settings()), object)


def test_uwsgi_without_threads_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import types

    from layersync_middleware import _sender

    fake = types.ModuleType("uwsgi")
    fake.opt = {"master": True}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    monkeypatch.setattr(_sender, "_uwsgi_checked", False)
    sender = ThreadSender(settings(), lambda: Scripted())
    sender.submit(event())
    assert "--enable-threads" in caplog.text
    sender.shutdown(1)


def test_console_log_goes_to_stderr() -> None:
    script = textwrap.dedent("""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="s", secret_key="sk_hidden_value", console_log=True, sender="sync",
                       api_url="http://127.0.0.1:9", max_retries=0, timeout_ms=200)
        ls.track("lead", event_id="no")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert "[LayerSync] WARNING event_id must be" in result.stderr
    assert "sk_hidden_value" not in result.stderr


def test_asyncio_sender_started_from_a_worker_thread(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))

    async def main() -> int:
        client.track("lead")  # the loop is now known
        assert await client.aflush(3) == 0
        await client.ashutdown(1)
        assert not client.stats().worker_alive
        await asyncio.to_thread(client.track, "lead")  # a sync endpoint in the threadpool
        for _ in range(100):
            if client.stats().worker_alive:
                break
            await asyncio.sleep(0.01)
        assert client.stats().worker_alive
        left = await client.aflush(3)
        await client.ashutdown(1)
        return left

    assert asyncio.run(main()) == 0
    assert len(hub.events("server")) == 2


def test_a_hand_made_event_without_client_meta_still_retries() -> None:
    clock = Clock()
    transport = Scripted(Outcome("retry", 500, None, "HTTP 500"))
    sender = sync_sender(transport, clock)
    assert sender.submit({"event_id": "evt_handmade0001", "event_name": "lead"})
    [item] = list(sender._queue)
    assert item.attempts == 1 and not item.inflight
    clock.now = item.due
    assert sender.flush(1) == 0


def test_pid_check_covers_forks_that_skip_the_hooks(hub: LiveHub) -> None:
    # uWSGI and Celery fork from C: Python's fork hooks never run. The pid check on enqueue
    # notices and starts over as a fresh child would.
    client = LayerSync(settings(api_url=hub.url))
    client.track("lead")
    assert client.flush(3) == 0
    sender = client.sender
    old_thread, old_lock = sender._thread, sender._lock  # type: ignore[attr-defined]
    sender._pid = -1  # what a forked child sees: the parent's pid
    client.track("lead")
    assert sender._pid == os.getpid()
    assert sender._lock is not old_lock and sender._thread is not old_thread  # type: ignore[attr-defined]
    assert client.flush(3) == 0 and len(hub.events("server")) == 2
    client.shutdown(1)
