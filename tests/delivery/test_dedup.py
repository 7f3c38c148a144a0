"""Fleet-wide pairing memory (``dedup_url``) against a real redis-server and the local hub.

Each ``LayerSync`` client has its own sender and memory of sent pairs, as a process of a
fleet has: two clients here are two gunicorn workers or two pods. The multi-process
version (two gunicorn workers) is in tests/test_celery.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fleet.redis_server import RedisServer, free_port
from helpers import SITE, LiveHub, settings

from layersync_middleware import LayerSync
from layersync_middleware._delivery import dedup as _dedup
from layersync_middleware._event import new_event_id
from layersync_middleware._log import RateLimitedLog


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def fleet(hub: LiveHub, redis_server: RedisServer) -> Iterator[Any]:
    """``fleet(n, **options)``: n clients (processes) sharing the Redis, delivering inline."""
    clients: list[LayerSync] = []

    def make(n: int, **options: Any) -> list[LayerSync]:
        options = {"sender": "sync", "api_url": hub.url, "dedup_url": redis_server.url, **options}
        made = [LayerSync(settings(**options)) for _ in range(n)]
        clients.extend(made)
        return made

    yield make
    for client in clients:
        client.shutdown(0)


def server_events(hub: LiveHub, event_id: str) -> int:
    return sum(1 for e in hub.events("server") if e["event"]["event_id"] == event_id)


def key(event_id: str, name: str) -> str:
    return f"layersync:pair:{SITE.site_id}:{name}:{event_id}"


def test_a_stale_pair_seen_by_two_processes_reaches_the_hub_once(hub: LiveHub, fleet: Any) -> None:
    one, two = fleet(2)
    eid = new_event_id("add_to_cart")
    assert one.track("add_to_cart", event_id=eid) == eid
    assert two.track("add_to_cart", event_id=eid) == eid  # queued: the claim is the sender's, later
    assert server_events(hub, eid) == 1
    assert (one.stats().sent, one.stats().duplicates) == (1, 0)
    assert (two.stats().sent, two.stats().duplicates) == (0, 1)


def test_without_dedup_url_each_process_sends_its_own_copy(hub: LiveHub, fleet: Any) -> None:
    # What dedup_url fixes (per-process memory only): the test above could fail.
    one, two = fleet(2, dedup_url=None)
    eid = new_event_id("add_to_cart")
    one.track("add_to_cart", event_id=eid)
    two.track("add_to_cart", event_id=eid)
    assert server_events(hub, eid) == 2


def test_processes_claiming_at_the_same_moment_send_once(hub: LiveHub, fleet: Any) -> None:
    clients = fleet(8)
    pairs = [new_event_id("purchase") for _ in range(10)]
    start = threading.Barrier(len(clients))

    def run(client: LayerSync) -> None:
        start.wait()
        for eid in pairs:
            client.track("purchase", event_id=eid)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [server_events(hub, eid) for eid in pairs] == [1] * len(pairs)
    assert sum(c.stats().sent for c in clients) == len(pairs)
    assert sum(c.stats().duplicates for c in clients) == len(pairs) * (len(clients) - 1)


def test_a_retried_event_keeps_its_claim(hub: LiveHub, fleet: Any, redis_server: RedisServer) -> None:
    one, two = fleet(2)
    hub.faults(mode="500", count=1)  # the first attempt fails; the same process retries
    eid = new_event_id("purchase")
    one.track("purchase", event_id=eid)
    assert server_events(hub, eid) == 0 and one.stats().retried == 1
    two.track("purchase", event_id=eid)  # meanwhile another process gets the stale re-send
    assert two.stats().duplicates == 1
    assert one.flush(5) == 0  # the retry finds the claim its own
    assert server_events(hub, eid) == 1
    assert one.stats().duplicates == 0
    ttl = redis_server.client().ttl(key(eid, "purchase"))
    assert 0 < ttl <= _dedup.CLAIM_TTL


def test_an_event_the_hub_rejects_gives_its_claim_back(hub: LiveHub, fleet: Any, redis_server: RedisServer) -> None:
    (wrong_key,) = fleet(1, secret_key="sk_not_the_right_one")
    eid = new_event_id("lead")
    wrong_key.track("lead", event_id=eid)
    assert wrong_key.stats().dropped == {"rejected": 1}
    assert redis_server.client().exists(key(eid, "lead")) == 0
    (right_key,) = fleet(1)  # the same pair, fixed: not refused as a duplicate
    right_key.track("lead", event_id=eid)
    assert server_events(hub, eid) == 1


def test_a_redis_that_is_down_falls_back_to_the_process_memory(
    hub: LiveHub, fleet: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="layersync")
    monkeypatch.setattr(_dedup, "_log", RateLimitedLog())  # a fresh minute for the once-a-minute warning
    down = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    client, other = fleet(2, dedup_url=down)
    before = _dedup.fallbacks()
    ids = [new_event_id("add_to_cart") for _ in range(5)]
    for eid in ids:
        assert client.track("add_to_cart", event_id=eid) == eid
    client.track("add_to_cart", event_id=ids[0])  # the process's own memory still refuses this one
    assert [server_events(hub, eid) for eid in ids] == [1] * 5
    assert client.stats().duplicates == 1
    assert _dedup.fallbacks() - before == 5
    other.track("add_to_cart", event_id=ids[1])  # another process: no fleet memory to ask
    assert server_events(hub, ids[1]) == 2
    warnings = [r for r in caplog.records if "de-duplicated per process only" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "hunter2" not in caplog.text and "ConnectionError" in warnings[0].getMessage()
    assert "hunter2" not in repr(client._worker._transport)


def test_a_silent_redis_costs_a_batch_at_most_its_timeout(hub: LiveHub, fleet: Any) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        (client,) = fleet(1, dedup_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_ms=1000)
        before = _dedup.fallbacks()
        started = time.monotonic()
        delivery = client.send("purchase", {"value": 1}, event_id=new_event_id("purchase"))
        elapsed = time.monotonic() - started
    assert delivery.ok, delivery
    assert elapsed < 1.0 + 1.0  # the send timeout, claims included, plus slack
    assert _dedup.fallbacks() - before == 1


def test_claims_resume_when_redis_is_back(hub: LiveHub, fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # No pause after a failure: Redis is asked again at once, instead of sleeping the second away.
    monkeypatch.setattr(_dedup, "RETRY_AFTER", 0.0)
    server = RedisServer()
    one, two = fleet(2, dedup_url=server.url)
    first = new_event_id("add_to_cart")
    one.track("add_to_cart", event_id=first)  # Redis not started yet: falls back
    with server:
        eid = new_event_id("add_to_cart")
        one.track("add_to_cart", event_id=eid)
        two.track("add_to_cart", event_id=eid)
    assert server_events(hub, first) == 1
    assert server_events(hub, eid) == 1
    assert two.stats().duplicates == 1


# -- issue 22.7: an id claimed from a request header never suppresses the app's own event ------------
def forged(event_id: str) -> dict[str, Any]:
    """A request to the order endpoint whose pairing headers carry a guessed id."""
    headers = [(b"host", b"shop.example"), (b"x-layersync-event-id", event_id.encode())]
    return {"type": "http", "path": "/api/orders", "headers": [*headers, (b"x-layersync-event-name", b"purchase")]}


def app_purchases(hub: LiveHub, event_id: str) -> int:
    """Server events of the pair that are the app's own (the forged ones carry no value)."""
    events = [e["event"] for e in hub.events("server") if e["event"]["event_id"] == event_id]
    return sum(1 for e in events if e["custom_data"].get("value") == 99)


@pytest.mark.parametrize("dedup", [False, True], ids=["one-process", "fleet-wide"])
def test_an_id_claimed_from_a_header_never_suppresses_the_apps_own_event(hub: LiveHub, fleet: Any, dedup: bool) -> None:
    # The review's repro: a browser sends headers with the next order numbers, then the app
    # tracks those purchases itself with its own (predictable) ids: 10 of 10 were suppressed.
    options = {} if dedup else {"dedup_url": None}
    browser_side, app_side = fleet(2, **options) if dedup else [fleet(1, **options)[0]] * 2
    tag = new_event_id("purchase")[-8:]
    ids = [f"order_{tag}_{n}" for n in range(10)]
    for eid in ids:
        assert browser_side.track_from_headers(forged(eid)) == eid  # forwarded, as a browser event is
    for eid in ids[:5]:
        assert app_side.track("purchase", {"value": 99}, event_id=eid) == eid
    for eid in ids[5:]:
        assert app_side.send("purchase", {"value": 99}, event_id=eid).ok
    assert [app_purchases(hub, eid) for eid in ids] == [1] * 10
    assert app_side.stats().duplicates == 0
    # The other way round a header is what it always was: a duplicate of what was sent.
    for eid in ids[:3]:
        assert browser_side.track_from_headers(forged(eid)) is None
    assert browser_side.stats().duplicates == 3
    app_first = f"order_{tag}_app"
    app_side.track("purchase", {"value": 99}, event_id=app_first)
    browser_side.track_from_headers(forged(app_first))  # refused in-process, or by Redis when sent
    assert server_events(hub, app_first) == app_purchases(hub, app_first) == 1
    assert browser_side.stats().duplicates == 4
