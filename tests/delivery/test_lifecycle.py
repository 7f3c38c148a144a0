"""However a process ends, the sender drains within one budget: SIGTERM to a plain
process that asked for it, handlers the app installs, multiprocessing children, ``drain()``
before an ``os._exit``, Celery's shutdown signals; several drains of one exit share one
``shutdown_timeout``; creating a client changes no global. Real processes against the
local hub."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from durable_apps.hubctl import SwitchableHub, env, python, spool_rows
from helpers import LiveHub, queued, settings, wait_for
from starlette.applications import Starlette
from starlette.testclient import TestClient

import layersync_middleware
from layersync_middleware import LayerSync, LayerSyncMiddleware
from layersync_middleware._delivery import lifecycle
from layersync_middleware._settings import _SENDERS
from layersync_middleware.testing import MemoryTransport

SLACK = 2.5  # interpreter start-up and a loaded CI machine

# Five purchases, the hub answering the first batch with 429 and Retry-After: 30 s, so
# nothing goes out by itself for the rest of the test: only a drain delivers them.
HELD = """
import sys, time
from helpers import wait_for
from layersync_middleware import LayerSync, drain_on_sigterm
assert drain_on_sigterm()
ls = LayerSync.from_env(shutdown_timeout=3)
ids = [ls.track("purchase", {"n": i}) for i in range(5)]
wait_for(lambda: ls.stats().last_status == 429, "the hub's 429")
"""


def ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")


@contextmanager
def run(body: str, environ: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``body`` in a fresh interpreter; killed if the test leaves it running, its pipes closed."""
    with python(textwrap.dedent(body), environ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_sigterm_to_a_plain_process_drains_then_dies_of_sigterm(hub: LiveHub) -> None:
    hub.faults(mode="429", retry_after=30, count=1)
    with run(HELD + "print('ready', flush=True)\ntime.sleep(60)\n", env(hub.url)) as proc:
        ready(proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(3 + SLACK) == -signal.SIGTERM  # as the default action would
        assert time.monotonic() - started < 3 + SLACK
    assert len(hub.events("server")) == 5  # 0 of 5 before: SIGTERM killed the queue


def test_sigterm_with_the_hub_down_keeps_the_events_in_the_spool(tmp_path: Path) -> None:
    down = SwitchableHub()
    down.down()
    spool = tmp_path / "spool.db"
    try:
        body = """
            import time
            from layersync_middleware import LayerSync, drain_on_sigterm
            drain_on_sigterm()
            ls = LayerSync.from_env(shutdown_timeout=3)
            ids = [ls.track("purchase", {"n": i}) for i in range(5)]
            print("ready", flush=True)
            time.sleep(60)  # the scenario: alive until the test signals it
        """
        with run(body, env(down.url, LAYERSYNC_SPOOL_PATH=str(spool), LAYERSYNC_TIMEOUT_MS="300")) as proc:
            ready(proc)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(3 + SLACK) == -signal.SIGTERM
            assert time.monotonic() - started < 3 + SLACK
            assert len(spool_rows(spool)) == 5
            assert proc.stderr is not None
            assert "exiting with 5 undelivered event(s) after 3.0s; 5 kept in the spool" in proc.stderr.read()
    finally:
        down.close()


def test_a_handler_the_app_installs_is_called_and_the_exit_drains(hub: LiveHub) -> None:
    hub.faults(mode="429", retry_after=30, count=1)
    body = HELD + textwrap.dedent("""
        import signal
        def graceful(signum, frame):
            print("app handler", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, graceful)
        print(signal.getsignal(signal.SIGTERM) is graceful, flush=True)
        print("ready", flush=True)
        time.sleep(60)  # the scenario: alive until the test signals it
    """)
    with run(body, env(hub.url)) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "True"  # getsignal reports the app's handler
        ready(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(3 + SLACK) == 3  # the app decided what SIGTERM means
        assert proc.stdout.read().strip() == "app handler"
    assert len(hub.events("server")) == 5  # and its exit drained


def test_sigterm_ignored_by_the_app_stays_ignored(hub: LiveHub) -> None:
    body = textwrap.dedent("""
        import signal, sys, time
        from layersync_middleware import LayerSync, drain_on_sigterm
        ls = LayerSync.from_env()
        drain_on_sigterm()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        sys.stdin.readline()
        print("still here", flush=True)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", body], env=env(hub.url), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    ready(proc)
    proc.send_signal(signal.SIGTERM)
    # No pause to see whether it dies: a SIGTERM that ended it (or drained and re-raised)
    # is handled before the line below is read, and shows as no "still here" and exit -15.
    out, _ = proc.communicate("go\n", timeout=10)
    assert out.strip() == "still here" and proc.returncode == 0


def test_multiprocessing_fork_children_deliver_every_event(hub: LiveHub) -> None:
    body = """
        import multiprocessing
        from layersync_middleware import LayerSync
        ls = LayerSync.from_env()

        def work(n):  # the child leaves with os._exit right after this returns
            for i in range(5):
                ls.track("purchase", {"child": n, "i": i})

        if __name__ == "__main__":
            children = [multiprocessing.get_context("fork").Process(target=work, args=(n,)) for n in range(3)]
            for child in children:
                child.start()
            for child in children:
                child.join()
            print("ready", flush=True)
    """
    with run(body, env(hub.url)) as proc:
        ready(proc)
        assert proc.wait(10) == 0
    assert len(hub.events("server")) == 15  # 0 of 15 before


def test_drain_before_os_exit_delivers(hub: LiveHub) -> None:
    # An RQ work horse (or any forked worker) ends with os._exit: atexit never runs.
    hub.faults(mode="429", retry_after=30, count=1)
    body = HELD + textwrap.dedent("""
        import os
        from layersync_middleware._delivery.lifecycle import drain
        left = drain()
        print(left, flush=True)
        os._exit(0)
    """)
    with run(body, env(hub.url)) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0"
        assert proc.wait(10) == 0
    assert len(hub.events("server")) == 5


# -- in this process -------------------------------------------------------------------------------
@pytest.fixture
def sigterm_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    yield
    lifecycle.uninstall_sigterm_drain()
    signal.signal(signal.SIGTERM, before)


@pytest.fixture
def new_exit() -> Iterator[None]:
    lifecycle.exit_over()
    yield
    lifecycle.exit_over()  # the next test's drains get a budget of their own


def test_creating_clients_changes_no_global(sigterm_restored: None) -> None:
    lifecycle.uninstall_sigterm_drain()  # an earlier test's Django middleware under ASGI may have asked
    before = (signal.signal, signal.getsignal, signal.getsignal(signal.SIGTERM))
    celery = {"celery_app": "fleet.memory_celery:app"}  # the hand-off needs an app; it sends nothing here
    clients = [LayerSync(settings(sender=kind, **(celery if kind == "celery" else {}))) for kind in _SENDERS]
    assert (signal.signal, signal.getsignal, signal.getsignal(signal.SIGTERM)) == before  # wrapped before
    for client in clients:
        client.shutdown(0)


def test_drain_on_sigterm_outside_the_main_thread_says_it_cannot(
    sigterm_restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    lifecycle.uninstall_sigterm_drain()
    installed: list[bool] = []
    thread = threading.Thread(target=lambda: installed.append(layersync_middleware.drain_on_sigterm()))
    thread.start()
    thread.join()
    assert installed == [False] and "main thread" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is not lifecycle._on_sigterm


def test_the_handler_stays_first_and_hands_on_to_whatever_is_installed_after(sigterm_restored: None) -> None:
    seen: list[str] = []
    assert layersync_middleware.drain_on_sigterm()  # asked for (main thread)
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append("server"))
    assert previous == signal.SIG_DFL  # what the server would have seen without us
    assert signal.getsignal(signal.SIGTERM) is not lifecycle._on_sigterm
    os.kill(os.getpid(), signal.SIGTERM)
    wait_for(lambda: seen == ["server"], "the server event", 2)
    with pytest.raises(TypeError):
        signal.signal(signal.SIGTERM, "not a handler")  # type: ignore[arg-type]
    assert signal.signal(signal.SIGINT, signal.getsignal(signal.SIGINT)) is not None  # other signals untouched


def test_celery_shutdown_signals_drain(hub: LiveHub, request: pytest.FixtureRequest, new_exit: None) -> None:
    from celery import signals  # type: ignore[import-untyped]

    lifecycle.drain_on_celery_shutdown()
    lifecycle.drain_on_celery_shutdown()  # twice is once
    ours = [r for r in signals.worker_process_shutdown.receivers if r[0][0] == "layersync-drain-process"]
    assert len(ours) == 1
    request.addfinalizer(
        lambda: (
            signals.worker_process_shutdown.disconnect(dispatch_uid="layersync-drain-process"),
            signals.worker_shutdown.disconnect(dispatch_uid="layersync-drain-worker"),
        )
    )
    hub.faults(mode="429", retry_after=30, count=1)
    ls = LayerSync(settings(api_url=hub.url))
    first = queued(ls.track("purchase"))
    wait_for(lambda: ls.stats().last_status == 429, "the hub's 429")
    # The drain is process-wide: clients other tests left behind may deliver too; count ours.
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    assert hub.server_ids().count(first) == 1
    second = queued(ls.track("purchase"))
    signals.worker_shutdown.send(sender=None)  # solo and threads pools
    assert hub.server_ids().count(second) == 1


# -- one budget per exit ---------------------------------------------------------------------------
def test_the_drains_of_one_exit_share_one_budget_and_say_the_loss_once(
    hub: LiveHub, new_exit: None, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn and granian drain on lifespan shutdown and again at exit, hypercorn once
    # more: each drain with a budget of its own made the exit take 2x or 3x, the loss said
    # each time.
    hub.faults(mode="hang", hang_seconds=5)
    ls = LayerSync(settings(api_url=hub.url, shutdown_timeout=0.5))
    for n in range(3):
        ls.track("purchase", {"n": n})
    started = time.monotonic()
    left = [lifecycle.drain(0.5) for _ in range(3)]  # say: the lifespan's, SIGTERM's, atexit's
    assert time.monotonic() - started < 0.5 + 0.3  # 1.5 s before
    assert min(left) >= 3
    said = [r.getMessage() for r in caplog.records if "undelivered" in r.getMessage()]
    assert said == [f"exiting with {left[0]} undelivered event(s) after 0.5s"]
    lifecycle.exit_over()  # the app goes on (its lifespan starts again): the next exit has a budget
    started = time.monotonic()
    lifecycle.drain(0.5)
    assert time.monotonic() - started > 0.4


def test_the_lifespan_shutdown_drains_every_client_of_the_process(hub: LiveHub, new_exit: None) -> None:
    # uvicorn ends with SIGTERM's default action after the lifespan: no atexit drain follows.
    # A client whose hub hangs takes its share of the budget, not the others'.
    hub.faults(mode="hang", hang_seconds=5)
    stuck = LayerSync(settings(api_url=hub.url))
    other = MemoryTransport()
    client = LayerSync(settings(sender="asyncio", matcher=["/api/*"]), transport=MemoryTransport())
    elsewhere = LayerSync(settings(), transport=other)  # a client the middleware does not know
    elsewhere._worker.wake = lambda: None  # type: ignore[method-assign]  # nothing leaves until a drain
    with TestClient(LayerSyncMiddleware(Starlette(), client=client)):
        stuck.track("purchase")
        elsewhere.track("purchase")
        wait_for(lambda: hub.hits() == 1, "the hub to hold the batch")
        started = time.monotonic()
    assert time.monotonic() - started < 2 + 0.5  # shutdown_timeout, for every client together
    assert [e["event_name"] for e in other.events] == ["purchase"]


def test_a_client_that_fails_to_shut_down_keeps_no_other_from_draining(
    new_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("a bug in one client's shutdown")

    delivered = MemoryTransport()
    client = LayerSync(settings(), transport=delivered)
    client._worker.wake = lambda: None  # type: ignore[method-assign]  # nothing leaves until a drain
    first = LayerSync(settings(sender="asyncio"), transport=MemoryTransport())
    monkeypatch.setattr(first._worker, "_shutdown", broken)
    monkeypatch.setattr(first._worker, "ashutdown", broken)
    eid = queued(client.track("purchase"))
    # The ASGI lifespan's drain: ``first`` on the loop fails, the others drain all the same.
    asyncio.run(lifecycle.adrain(2, first._worker))
    assert [e["event_id"] for e in delivered.events] == [eid]
    lifecycle.exit_over()
    again = queued(client.track("purchase"))
    assert layersync_middleware.drain(2) >= 0  # never raises
    assert [e["event_id"] for e in delivered.events] == [eid, again]


def test_a_drain_that_breaks_is_logged_and_returns_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> int:
        raise RuntimeError("a bug in the drain")

    async def abroken(*args: object) -> int:
        raise RuntimeError("a bug in the drain")

    monkeypatch.setattr(lifecycle, "drain_all", broken)
    monkeypatch.setattr(lifecycle, "adrain_all", abroken)
    client = LayerSync(settings(sender="asyncio"), transport=MemoryTransport())
    assert lifecycle.drain(1) == 0
    assert asyncio.run(lifecycle.adrain(1, client._worker)) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["layersync drain error"] * 2
    client.shutdown(0)
