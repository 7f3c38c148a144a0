"""The drivers (inline, thread, asyncio) against the real hub on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Sequence

import pytest
from helpers import SITE, LiveHub, queued, settings, wait_for

from layersync_middleware import LayerSync
from layersync_middleware._delivery import drivers as worker_module
from layersync_middleware._delivery.drivers import AsyncioWorker, ThreadWorker
from layersync_middleware._delivery.transport import AsyncHTTPTransport, HTTPTransport, Outcome, Transport
from layersync_middleware._event import Event
from layersync_middleware.testing import MemoryTransport

SLACK = 1.5  # seconds a bounded call may overrun its deadline on a loaded CI machine


# -- the thread worker ---------------------------------------------------------------------------
def test_thread_worker_retries_through_500s(hub: LiveHub) -> None:
    hub.faults(mode="500", count=2)
    client = LayerSync(settings(api_url=hub.url))
    eid = client.track("purchase", {"value": 1})
    wait_for(lambda: hub.events("server"), "the server event")
    [stored] = hub.events("server")
    assert stored["event"]["event_id"] == eid and stored["event"]["client_meta"]["attempts"] == 2
    assert client.stats().retried == 2
    client.shutdown(1)


def test_thread_worker_honours_retry_after(hub: LiveHub) -> None:
    hub.faults(mode="429", count=1, retry_after=1)
    client = LayerSync(settings(api_url=hub.url))
    started = time.monotonic()
    client.track("lead")
    wait_for(lambda: hub.events("server"), "the server event")
    assert time.monotonic() - started >= 1.0
    client.shutdown(1)


def test_events_go_in_batches_not_one_request_each(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url))
    for i in range(120):
        client.track("view_item", {"item_id": f"SKU-{i}", "description": "long text " * 100})
    assert client.flush(10) == 0
    assert len(hub.events("server")) == 120
    assert client.stats().batches <= 10  # coalesced: woken per batch, not per event
    client.shutdown(1)


def test_enqueue_stays_fast_while_the_hub_hangs(hub: LiveHub) -> None:
    hub.faults(mode="hang", hang_seconds=5)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=3000, max_queue_size=100))
    started = time.monotonic()
    for _ in range(1000):
        client.track("add_to_cart")
    # Not a benchmark: one blocking call would take the 3 s timeout by itself.
    assert time.monotonic() - started < 2.0
    stats = client.stats()  # the cap, plus the one batch stuck in flight
    assert stats.queued - stats.in_flight <= 100 and stats.dropped.get("queue_full", 0) == 1000 - stats.queued
    flushed_at = time.monotonic()
    assert client.shutdown(0.5) > 0
    assert time.monotonic() - flushed_at < 0.5 + SLACK  # never longer than asked, hub or not


def test_a_slow_on_drop_never_runs_on_the_request_path(hub: LiveHub) -> None:
    calls: list[str] = []

    def slow_on_drop(event: Event, reason: str) -> None:
        time.sleep(0.2)  # the scenario: slow user code in the hook
        calls.append(threading.current_thread().name)

    client = LayerSync(settings(api_url=hub.url, max_queue_size=1), on_drop=slow_on_drop)
    hub.faults(mode="hang", hang_seconds=3)
    started = time.monotonic()
    for _ in range(20):
        client.track("page_view")  # the queue is full: each one is dropped
    assert time.monotonic() - started < 1.0  # 20 x 0.2 s if on_drop ran here
    wait_for(lambda: len(calls) >= 1, "on_drop to run", 5)
    assert threading.current_thread().name not in calls
    client.shutdown(0.1)


@pytest.mark.parametrize("mode", ["hang", "drip"])
def test_flush_and_shutdown_never_wait_longer_than_asked(hub: LiveHub, mode: str) -> None:
    # httpx's timeouts bound each read: a hub dripping its answer a byte a second held
    # flush() for 25 s in the first release.
    hub.faults(mode=mode, hang_seconds=30, drip_ms=500)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=2000))
    client.track("purchase")
    started = time.monotonic()
    assert client.flush(1.0) == 1
    assert time.monotonic() - started < 1.0 + SLACK
    started = time.monotonic()
    client.shutdown(1.0)
    assert time.monotonic() - started < 1.0 + SLACK
    hub.faults(mode=None)


@pytest.mark.parametrize("mode", ["hang", "drip"])
def test_send_is_bounded_by_its_timeout_in_all(hub: LiveHub, mode: str) -> None:
    hub.faults(mode=mode, hang_seconds=30, drip_ms=300)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=10_000, max_retries=2))
    started = time.monotonic()
    delivery = client.send("purchase", timeout=2)
    assert time.monotonic() - started < 2 + SLACK
    assert not delivery.ok and delivery.queued
    hub.faults(mode=None)
    client.shutdown(0.1)


def test_send_does_not_sleep_after_its_last_attempt(hub: LiveHub) -> None:
    hub.faults(mode="500")
    client = LayerSync(settings(api_url=hub.url, max_retries=2, timeout_ms=10_000))
    started = time.monotonic()
    delivery = client.send("lead")
    elapsed = time.monotonic() - started
    assert not delivery.ok and delivery.status == 500
    assert 1.4 <= elapsed < 2.5  # 0.5 s + 1 s between three attempts, no pause after the last
    hub.faults(mode=None)
    client.shutdown(0.1)


def test_shutdown_tries_parked_events_now_and_the_worker_restarts_lazily(hub: LiveHub) -> None:
    hub.faults(mode="500")
    client = LayerSync(settings(api_url=hub.url, max_retries=0))
    client.track("purchase")
    wait_for(lambda: client.stats().retried == 1, "the failed attempt")  # failed once, now parked for ~5 s
    hub.faults(mode=None)
    started = time.monotonic()
    assert client.shutdown(3) == 0
    assert time.monotonic() - started < 2
    assert not client.stats().worker_alive
    client.track("lead")  # the worker starts again on next use
    assert client.flush(3) == 0 and len(hub.events("server")) == 2
    client.shutdown(1)


def test_after_an_outage_every_event_that_fit_arrives_once(hub: LiveHub) -> None:
    hub.faults(mode="500")
    client = LayerSync(settings(api_url=hub.url, max_queue_size=300, max_retries=0))
    ids = [queued(client.track("add_to_cart", {"n": i})) for i in range(200)]
    wait_for(lambda: client.stats().retried >= 1, "a failed attempt")
    hub.faults(mode=None)
    assert client.flush(10) == 0
    stored = [e["event"]["event_id"] for e in hub.events("server")]
    assert sorted(stored) == sorted(ids)  # all of them, each once
    client.shutdown(1)


def test_uwsgi_without_threads_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = types.ModuleType("uwsgi")
    fake.opt = {"master": True}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    monkeypatch.setattr(worker_module, "_uwsgi_checked", False)
    client = LayerSync(settings(), transport=MemoryTransport())
    client.track("lead")
    assert "--enable-threads" in caplog.text
    client.shutdown(1)


def test_pid_check_covers_forks_that_skip_the_hooks(hub: LiveHub) -> None:
    # uWSGI and Celery fork from C: Python's fork hooks never run. The pid check on submit
    # notices and starts over as a fresh child would.
    client = LayerSync(settings(api_url=hub.url))
    client.track("lead")
    assert client.flush(3) == 0
    worker = client._worker
    assert isinstance(worker, ThreadWorker)
    old_thread, old_lock, old_transport = worker._thread, worker.sender.lock, worker._transport
    worker._pid = -1  # what a forked child sees: the parent's pid
    client.track("lead")
    assert worker._pid == os.getpid()
    assert worker.sender.lock is not old_lock and worker._thread is not old_thread
    assert worker._transport is not old_transport  # a child does not use the parent's connections
    assert client.flush(3) == 0 and len(hub.events("server")) == 2
    client.shutdown(1)
    assert old_transport is not None
    old_transport.close()  # the "parent's": the same process here


# -- the inline worker (sender="sync") -----------------------------------------------------------------
def test_inline_worker_sends_in_the_caller_and_keeps_failures_for_later(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="sync"))
    client.track("lead")
    assert len(hub.events("server")) == 1  # already there when track() returns
    hub.faults(mode="500")
    client.track("purchase")
    assert client.stats().queued == 1
    hub.faults(mode=None)
    assert client.flush(3) == 0 and len(hub.events("server")) == 2
    client.shutdown(1)


# -- processes ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_its_own_sender(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url))
    client.track("lead", {"who": "parent-before-fork"})
    assert client.flush(3) == 0
    worker = client._worker
    worker._stop(5)  # park one event in the parent: no worker, none started
    worker.wake = lambda: None  # type: ignore[method-assign]
    parked = client.track("purchase", {"who": "parent-queued"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh queue and worker; the parent's queued event is not its to send
        try:
            del worker.wake
            child = client.track("add_to_cart", {"who": "child"})
            left = client.flush(5)
            os.write(write, f"{child} {left} {client.stats().queued}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with open(read, "rb") as pipe:
        child_id, child_left, child_queued = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert (child_left, child_queued) == ("0", "0")
    sent = {e["event"]["event_id"]: e["event"]["custom_data"]["who"] for e in hub.events("server")}
    assert sent[child_id] == "child"
    assert parked not in sent  # still the parent's
    del worker.wake
    assert client.flush(3) == 0
    assert parked in {e["event"]["event_id"] for e in hub.events("server")}
    client.shutdown(1)


def run_script(body: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True, timeout=timeout
    )


def test_events_are_drained_at_exit(hub: LiveHub) -> None:
    result = run_script(f"""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="{SITE.site_id}", secret_key="{SITE.secret_key}", api_url="{hub.url}")
        for i in range(5):
            ls.track("purchase", {{"order_id": f"O-{{i}}"}})
        # no flush: the atexit drain must deliver them
    """)
    assert result.returncode == 0, result.stderr
    assert sorted(e["event"]["custom_data"]["order_id"] for e in hub.events("server")) == [f"O-{i}" for i in range(5)]


@pytest.mark.parametrize("mode", ["down", "drip"])
def test_exit_is_bounded_by_shutdown_timeout_and_says_what_was_lost(hub: LiveHub, mode: str) -> None:
    url = "http://127.0.0.1:9" if mode == "down" else hub.url
    if mode == "drip":
        hub.faults(mode="drip", drip_ms=300)
    started = time.monotonic()
    result = run_script(f"""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="s", secret_key="sk_x", api_url="{url}", shutdown_timeout=1, timeout_ms=10000)
        ls.track("purchase")
    """)
    assert time.monotonic() - started < 1 + 5  # interpreter start-up and the 1 s drain
    assert result.returncode == 0
    assert "1 undelivered event" in result.stderr
    hub.faults(mode=None)


def test_console_log_goes_to_stderr() -> None:
    result = run_script("""
        from layersync_middleware import LayerSync
        ls = LayerSync(site_id="s", secret_key="sk_hidden_value", console_log=True, sender="sync",
                       api_url="http://127.0.0.1:9", max_retries=0, timeout_ms=200)
        ls.track("lead", event_id="no")
    """)
    assert "[LayerSync] WARNING event_id must be" in result.stderr
    assert "sk_hidden_value" not in result.stderr


# -- the asyncio worker ---------------------------------------------------------------------------------
def test_asyncio_worker_delivers_on_the_loop(hub: LiveHub) -> None:
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


def test_asyncio_worker_leftovers_go_with_the_sync_flush(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))
    client._worker.wake = lambda: None  # type: ignore[method-assign]  # no loop ever ran
    client.track("purchase")
    assert client.flush(3) == 0
    assert len(hub.events("server")) == 1
    client.shutdown(1)


def test_asyncio_worker_without_a_loop_delivers_from_a_thread(hub: LiveHub) -> None:
    # FastAPI `def` endpoints run in a threadpool: with no loop seen yet, the events
    # used to wait for shutdown.
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))
    threading.Thread(target=client.track, args=("lead",)).start()
    wait_for(lambda: len(hub.events("server")) == 1, "the server event", 5)
    client.shutdown(1)


def test_asyncio_worker_started_from_a_worker_thread(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))

    async def main() -> int:
        client.track("lead")  # the loop is now known
        assert await client.aflush(3) == 0
        await client.ashutdown(1)
        assert not client.stats().worker_alive
        await asyncio.to_thread(client.track, "lead")  # a sync endpoint in the threadpool
        # Polled from a thread: the loop stays free to run the worker it starts.
        await asyncio.to_thread(wait_for, lambda: client.stats().worker_alive, "the worker to start again")
        left = await client.aflush(3)
        await client.ashutdown(1)
        return left

    assert asyncio.run(main()) == 0
    assert len(hub.events("server")) == 2


def test_events_in_flight_when_the_loop_ends_are_not_lost(hub: LiveHub) -> None:
    # asyncio.run() ending cancels the task mid-request: the batch goes back to the
    # queue (it was stuck in flight for ever), and the exit drain or a flush sends it.
    hub.faults(mode="hang", hang_seconds=2, count=1)
    client = LayerSync(settings(api_url=hub.url, sender="asyncio", max_queue_size=5))

    async def main() -> None:
        client.track("purchase")
        await asyncio.to_thread(wait_for, lambda: hub.hits() == 1, "the hub to hold the batch")  # in flight now

    asyncio.run(main())
    assert client.stats().in_flight == 0 and client.stats().queued == 1
    assert client.flush(5) == 0
    assert len(hub.events("server")) == 1
    client.shutdown(1)


def test_ashutdown_closes_every_connection_it_opened(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))

    async def main() -> None:
        client.track("lead")
        await asyncio.to_thread(client.send, "purchase")  # the sync transport, opened from a thread
        await client.ashutdown(2)

    asyncio.run(main())
    worker = client._worker
    assert worker._transport is None


def test_the_asyncio_sender_sends_through_a_transport_without_asend_in_a_thread() -> None:
    class SendOnly:
        """A user's transport with only the synchronous ``send``."""

        def __init__(self) -> None:
            self.sent: list[tuple[str, str]] = []  # (event id, thread)

        def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
            self.sent += [(str(e["event_id"]), threading.current_thread().name) for e in events]
            return [Outcome("ok", 200) for _ in events]

        def close(self) -> None:
            pass

    transport = SendOnly()
    client = LayerSync(settings(sender="asyncio"), transport=transport)

    async def app() -> tuple[str, int, str]:
        eid = queued(client.track("lead"))
        left = await client.aflush(3)
        await client.ashutdown(1)
        return eid, left, threading.current_thread().name

    eid, left, loop_thread = asyncio.run(app())
    assert left == 0 and [i for i, _ in transport.sent] == [eid]
    assert transport.sent[0][1] != loop_thread  # a blocking send never runs on the loop


# -- every connection a worker opens is closed ------------------------------------------------------------
def closed(transport: HTTPTransport) -> bool:
    # A call, not an attribute read: mypy keeps an asserted attribute narrowed.
    return transport.closed


def test_a_shutdown_that_cannot_wait_closes_the_connection_when_the_request_ends(hub: LiveHub) -> None:
    hub.faults(mode="hang", hang_seconds=1, count=1)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=5000))
    client.track("purchase")
    wait_for(lambda: hub.hits() == 1, "the hub to hold the batch")
    worker = client._worker
    transport, thread = worker._transport, getattr(worker, "_thread", None)
    assert isinstance(transport, HTTPTransport) and isinstance(thread, threading.Thread)
    client.shutdown(0.1)  # the thread is held by the hub: shutdown() returns without it
    assert thread.is_alive() and not closed(transport)
    thread.join(5)  # the hub answers 503 after 1 s
    assert not thread.is_alive()
    assert closed(transport) and worker._transport is None
    client.shutdown(1)


def test_two_threads_wanting_the_first_transport_share_one(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url))
    worker = client._worker
    made: list[Transport] = []
    start = threading.Barrier(2)

    def slow_factory() -> Transport:
        time.sleep(0.1)  # the scenario: a slow set-up, so both callers are past the first look
        made.append(HTTPTransport(client.settings))
        return made[-1]

    worker._make_transport = slow_factory

    def first_use() -> None:
        start.wait()
        worker._transport_now()

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(made) == 1 and worker._transport is made[0]
    client.shutdown(1)


def test_the_async_client_is_closed_when_the_loop_ends_without_ashutdown(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, sender="asyncio"))
    worker = client._worker
    assert isinstance(worker, AsyncioWorker)

    async def app() -> AsyncHTTPTransport | None:
        client.track("lead")  # the worker task delivers on this loop, polled from a thread
        await asyncio.to_thread(wait_for, lambda: client.stats().sent == 1, "the worker task to deliver")
        transport = worker._atransport
        return transport if isinstance(transport, AsyncHTTPTransport) else None

    transport = asyncio.run(app())  # ends the loop: its tasks are cancelled, no ashutdown()
    assert transport is not None and transport.closed
    assert len(hub.events("server")) == 1
    client.shutdown(1)
