"""Durable delivery across real process ends: a SIGKILL mid-burst with the hub down,
gunicorn workers sharing a spool with one killed, Celery prefork children recycled
after every task, Django under uvicorn stopped with SIGTERM. Real servers, the real
local hub over loopback."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from durable_apps.hubctl import ROOT, SwitchableHub, env, spool_rows
from helpers import LiveHub, wait_for
from servers import command, free_port, wait_until_serving

from layersync_middleware import _wire
from layersync_middleware._delivery.spool import PERSIST_WINDOW
from layersync_middleware._event import new_event_id

ONE_SHOT = httpx.Limits(max_keepalive_connections=0)  # each request may go to another worker


def start(args: list[str], environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=environ, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stderr(proc: subprocess.Popen[str]) -> Callable[[], str]:
    """What ``proc`` printed on stderr, read once it has exited."""
    return lambda: proc.stderr.read() if proc.stderr and proc.poll() is not None else ""


def stop(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """End ``proc`` as a deploy does (SIGTERM, SIGKILL after ``timeout``); returns its stderr.
    ``communicate`` reads both pipes to the end and closes them."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, errors = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, errors = proc.communicate()
    return errors


def send_what_the_spool_holds(environ: dict[str, str]) -> None:
    """A new process on the spool: it adopts what it finds and delivers it."""
    after = subprocess.run(
        [sys.executable, "-c", "from layersync_middleware import LayerSync; print(LayerSync.from_env().flush(10))"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert after.stdout.strip() == "0", after.stderr


def test_sigkill_mid_burst_a_new_process_delivers_what_was_on_disk_once(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    switchable_hub.down()
    environ = env(switchable_hub.url, LAYERSYNC_SPOOL_PATH=str(tmp_path / "spool.db"), LAYERSYNC_TIMEOUT_MS="300")
    seen: list[tuple[str, float]] = []  # (id, when this process read it: after track() returned)
    with start([sys.executable, "-m", "durable_apps.burst", "900"], environ) as burst:  # closes its pipes
        assert burst.stdout is not None
        while len(seen) < 600:
            line = burst.stdout.readline()
            assert line, burst.stderr.read() if burst.stderr else ""
            seen.append((line.strip(), time.monotonic()))
        killed_at = time.monotonic()
        burst.kill()
        burst.wait()
        accepted = {eid for eid, _ in seen} | set(burst.stdout.read().split())
    on_disk = {eid for eid, at in seen if at < killed_at - PERSIST_WINDOW}
    switchable_hub.up()
    send_what_the_spool_holds(environ)
    counts = switchable_hub.counts()
    assert on_disk <= set(counts)  # everything accepted more than the window before the kill
    assert set(counts.values()) == {1}  # exactly once
    assert set(counts) <= accepted
    lost = accepted - set(counts)
    print(f"SIGKILL: {len(accepted)} accepted, {len(lost)} lost (accepted within the last {PERSIST_WINDOW}s)")


def test_gunicorn_workers_share_a_spool_and_a_killed_workers_events_arrive_once(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    switchable_hub.down()
    spool = tmp_path / "spool.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = env(switchable_hub.url, LAYERSYNC_SPOOL_PATH=str(spool), LAYERSYNC_TIMEOUT_MS="300")
    args = [sys.executable, "-m", "gunicorn", "durable_apps.wsgi_app:app", "-b", f"127.0.0.1:{port}", "-w", "4"]
    server = start([*args, "--graceful-timeout", "10", "--log-level", "warning"], environ)
    try:
        wait_until_serving(url, server, "gunicorn", stderr(server))
        served: dict[str, int] = {}
        with httpx.Client(base_url=url, limits=ONE_SHOT) as http:
            for _ in range(60):
                pid, eid = http.get("/track").text.split()
                served[eid] = int(pid)
        wait_for(lambda: len(spool_rows(spool)) == 60, "60 events in the spool", 5)
        victim, _ = collections.Counter(served.values()).most_common(1)[0]
        os.kill(victim, signal.SIGKILL)
        # Gunicorn starts a replacement, which adopts the dead worker's rows when it loads the app.
        wait_for(lambda: not spool_rows(spool, f"owner LIKE '{victim}-%'"), "the victim's rows to be adopted", 15)
        switchable_hub.up()
    finally:
        output = stop(server)
    counts = switchable_hub.counts()
    assert set(counts) == set(served), output  # the killed worker's too
    assert set(counts.values()) == {1}
    assert spool_rows(spool) == []


def test_celery_prefork_recycling_every_child_delivers_every_event(hub: LiveHub, tmp_path: Path) -> None:
    # Each child is recycled after one task: billiard ends it with os._exit (and the parent
    # sends it SIGTERM) while its event still lingers for company: 4 of 10 arrived before.
    broker = tmp_path / "broker"
    (broker / "processed").mkdir(parents=True)
    environ = env(hub.url, BROKER_DIR=str(broker))
    worker = start(
        [
            *(sys.executable, "-m", "celery", "-A", "durable_apps.celery_app", "worker", "--pool=prefork"),
            *("-c", "2", "--max-tasks-per-child=1", "--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("-l", "warning"),
        ],
        environ,
    )
    try:
        send = "from durable_apps.celery_app import track_purchase\nfor i in range(10): track_purchase.delay(i)"
        sent = subprocess.run([sys.executable, "-c", send], env=environ, cwd=ROOT, capture_output=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: len(hub.events("server")) >= 10, "10 server events at the hub", 40)
    finally:
        output = stop(worker)
    ids = sorted(e["event"]["event_id"] for e in hub.events("server"))
    assert ids == [f"celery-order-{n:04d}" for n in range(10)], output


def test_django_under_uvicorn_delivers_across_sigterm(hub: LiveHub) -> None:
    # Django has no lifespan for the middleware to drain on, and uvicorn re-raises SIGTERM
    # with the default action once it has shut down: only the SIGTERM drain is left.
    hub.faults(mode="429", retry_after=30, count=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(command("uvicorn", "example_apps.django_app:asgi_application", port), env(hub.url))
    try:
        wait_until_serving(url, server, "uvicorn", stderr(server))
        ids = [new_event_id("purchase") for _ in range(5)]
        with httpx.Client(base_url=url) as shop:
            for eid in ids:
                headers = {"X-LayerSync-Event-Id": eid, "X-LayerSync-Event-Name": "purchase"}
                assert shop.post("/api/orders", json={"items": ["SKU-A"]}, headers=headers).status_code == 201
        wait_for(lambda: hub.hits() == 1, "the hub to hold the batch (for 30 s)")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(15) == -signal.SIGTERM  # uvicorn's own ending, unchanged
        assert time.monotonic() - started < 2 + 3  # shutdown_timeout, and uvicorn's own shutdown
    finally:
        stop(server)
    assert sorted(e["event"]["event_id"] for e in hub.events("server")) == sorted(ids)  # 0 of 5 before


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A directory on a 1 MiB tmpfs (root), or with the spool's own size cap at 1 MiB."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    yield where, [] if mounted.returncode == 0 else [str(1 << 20)]
    if mounted.returncode == 0:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_keeps_memory_bounded_track_cheap_and_sends_nothing_twice(
    switchable_hub: SwitchableHub, full_disk: tuple[Path, list[str]]
) -> None:
    where, cap_args = full_disk
    switchable_hub.down()
    spool = str(where / "spool.db")
    # A request may take its time: the first after the hub comes back carries a full batch of
    # 500 (at 300 ms a slow hub timed it out, and flush() gives each event one attempt).
    environ = env(
        switchable_hub.url, LAYERSYNC_SPOOL_PATH=spool, LAYERSYNC_TIMEOUT_MS="3000", LAYERSYNC_CONSOLE_LOG="1"
    )
    # 12,000 events of about 600 bytes, 3,000 kept in the queue: the disk is full after about 1,500.
    args = [sys.executable, "-m", "durable_apps.full_disk", "12000", "3000", *cap_args]
    with subprocess.Popen(
        args, env=environ, cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        burst = json.loads(proc.stdout.readline() or "null")
        assert burst is not None, proc.stderr.read()
        switchable_hub.up()
        proc.stdin.write("up\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"left": 0, "queued": 0}
        log = proc.stderr.read()
    print(f"full disk: {burst}")
    # No backlog of writes beyond what memory holds anyway: the queue and the batch in flight
    # (re-parked with its attempts when it fails); 12,000 before.
    assert burst["backlog"] <= 3000 + _wire.SERVER_BATCH_MAX_EVENTS
    # track() stays cheap; its maximum is the machine's scheduling (as high without a spool on a busy CI).
    assert burst["ms"]["p99"] < 5
    said = [line for line in log.splitlines() if "is full" in line]
    assert len(said) == 1 and "free space there or point spool_path (LAYERSYNC_SPOOL_PATH)" in said[0], said
    delivered = switchable_hub.counts()
    # The queue, and the batch that was in flight (it failed and waits again, its attempt counted).
    assert 3000 <= len(delivered) <= 3000 + _wire.SERVER_BATCH_MAX_EVENTS and set(delivered.values()) == {1}
    # Room again (the operator grew the volume), and the next process on that spool (a
    # restart, another worker) sends nothing again: rows of events sent meanwhile are gone.
    if not cap_args:
        subprocess.run(["mount", "-o", "remount,size=16m", str(where)], check=True)
    send_what_the_spool_holds(environ)
    assert switchable_hub.counts() == delivered
