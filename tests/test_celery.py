"""Delivery through Celery (``sender="celery"``) with real servers: redis-server as the broker
(and as the fleet's pairing memory), a Celery worker process (prefork, two children) running
``example_apps/celery_app.py``, web apps under uvicorn and gunicorn, and the local hub.

The hand-off and the ``deliver`` task are also tested in this process (the task run eagerly
with ``apply()``, retries included), where their outcomes can be looked at one by one.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery  # type: ignore[import-untyped]
from fleet.processes import ROOT, Process, celery_worker, run, web_server
from fleet.rabbitmq_server import RabbitMQServer
from fleet.redis_server import RedisServer, free_port
from helpers import SECRET, SITE, settings, wait_for

import layersync_middleware.celery as ls_celery
from layersync_middleware import ConfigurationError, LayerSync, _wire, cli
from layersync_middleware._delivery.transport import Outcome
from layersync_middleware._event import Event, build_event, encode_event, new_event_id
from layersync_middleware._log import RateLimitedLog
from layersync_middleware.hub import HubServer, create_hub
from layersync_middleware.hub.app import HubApp

PAIRED_PATH = "/api/cart/add"


def event(name: str = "add_to_cart", **changes: Any) -> Event:
    built = build_event(
        site_id=SITE.site_id,
        event_name=name,
        event_id=new_event_id(name),
        props={"value": 1},
        user_data={},
        event_source_url=None,
    )
    return {**built, **changes}


def queued_messages(server: RedisServer, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in server.client().lrange(queue, 0, -1)]


def task_args(message: dict[str, Any]) -> list[Any]:
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return list(args)


# -- the hub the fleet delivers to: its own, so that it can go down and come back -----------
class Hub:
    def __init__(self) -> None:
        self.app: HubApp = create_hub([SITE])
        self.server = HubServer(self.app).start()
        self.url = self.server.url
        self.store = self.app.hub.store

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = HubServer(self.app, port=self.server.port).start()

    def faults(self, **faults: Any) -> None:
        httpx.post(self.url + "/api/hub/faults", json=faults).raise_for_status()

    def server_counts(self) -> dict[str, int]:
        """event_id -> how many server events the hub received with it."""
        groups = self.store.groups(limit=1_000_000, site_id=SITE.site_id)
        return {g["event_id"]: g["server"] for g in groups if g["server"]}

    def attempts(self) -> dict[str, int]:
        return {
            e["event"]["event_id"]: e["event"]["client_meta"]["attempts"]
            for e in self.store.events(limit=1_000_000, site_id=SITE.site_id)
        }


@pytest.fixture(scope="module")
def fleet_hub() -> Iterator[Hub]:
    hub = Hub()
    yield hub
    hub.server.stop()
    hub.store.close()


@pytest.fixture
def hub_store(fleet_hub: Hub) -> Hub:
    fleet_hub.store.clear()
    fleet_hub.faults()
    return fleet_hub


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def layersync_env(hub: Hub) -> dict[str, str]:
    return {"LAYERSYNC_SITE_ID": SITE.site_id, "LAYERSYNC_SECRET": SECRET, "LAYERSYNC_API_URL": hub.url}


@pytest.fixture(scope="module")
def worker(fleet_hub: Hub, broker: RedisServer) -> Iterator[Process]:
    process = celery_worker({"CELERY_BROKER_URL": broker.url, **layersync_env(fleet_hub)}, concurrency=2)
    yield process
    process.stop()


@pytest.fixture
def web_env(fleet_hub: Hub, broker: RedisServer, worker: Process) -> dict[str, str]:
    """What a web process of the fleet needs: the broker, the hub, the Celery sender."""
    return {"CELERY_BROKER_URL": broker.url, "LAYERSYNC_SENDER": "celery", **layersync_env(fleet_hub)}


def pairing(event_id: str, name: str = "add_to_cart") -> dict[str, str]:
    return {"X-LayerSync-Event-Id": event_id, "X-LayerSync-Event-Name": name}


def post_paired(url: str, ids: list[str], *, threads: int = 8) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=10) as http, concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda eid: http.post(PAIRED_PATH, headers=pairing(eid)), ids))


def app_state(url: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(url + "/state", timeout=5).json()
    return state


def nothing_queued(url: str) -> Callable[[], bool]:
    """The app at ``url`` has handed every event it queued to Celery."""
    return lambda: app_state(url)["stats"]["queued"] == 0


# -- the hand-off, in this process --------------------------------------------------------------
def test_a_batch_is_handed_to_the_broker_as_one_task_without_the_secret(broker: RedisServer) -> None:
    app = Celery("handoff-test", broker=broker.url, set_as_current=False)
    transport = ls_celery.HandoffTransport(settings(celery_queue="handoff-test"), app)
    events = [event(), event("purchase"), event()]
    bodies = [encode_event(e) for e in events]
    try:
        assert transport.send(events, bodies, 5.0) == [Outcome("ok")] * 3
    finally:
        transport.close()
    raw = broker.client().lrange("handoff-test", 0, -1)
    assert len(raw) == 1
    assert SECRET.encode() not in raw[0] and SECRET.encode() not in base64.b64decode(json.loads(raw[0])["body"])
    (message,) = queued_messages(broker, "handoff-test")
    assert message["headers"]["task"] == ls_celery.TASK_NAME
    assert message["headers"]["argsrepr"] == "[<3 events>]"  # what Flower shows: no event data
    assert events[0]["event_id"].encode() not in base64.b64decode(message["body"])  # opaque to any log
    payload, handed_at, meta = task_args(message)
    assert ls_celery.unpack(payload) == bodies  # the web process's encoding, as it was
    assert abs(handed_at - time.time()) < 60
    assert meta == {"v": 2, "site_id": SITE.site_id, "key": ls_celery.key_fingerprint(settings())}


def test_a_broker_that_is_down_or_silent_answers_retry_within_the_timeout(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ls_celery, "_log", RateLimitedLog())  # a fresh minute for the warning
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        down = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
        for url in (down, f"redis://127.0.0.1:{silent.getsockname()[1]}/0"):
            transport = ls_celery.HandoffTransport(settings(timeout_ms=900), Celery(broker=url, set_as_current=False))
            started = time.monotonic()
            outcomes = transport.send([event()], [encode_event(event())], 0.9)
            elapsed = time.monotonic() - started
            transport.close()
            assert [o.action for o in outcomes] == ["retry"], url
            assert outcomes[0].error is not None and "Celery broker" in outcomes[0].error
            assert elapsed < 0.9 + 1.0, (url, elapsed)
    assert "could not hand 1 event(s) to the Celery broker at redis://:********@127.0.0.1:" in caplog.text
    assert "hunter2" not in caplog.text


def test_events_wait_in_the_process_while_the_broker_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    later = RedisServer()
    chosen = settings(sender="celery", celery_queue="handoff-later", timeout_ms=500)
    app = Celery("later", broker=later.url, set_as_current=False)
    client = LayerSync(chosen, transport=ls_celery.HandoffTransport(chosen, app))
    ids = [new_event_id("purchase") for _ in range(5)]
    try:
        started = time.monotonic()
        assert [client.track("purchase", event_id=eid) for eid in ids] == ids
        assert time.monotonic() - started < 0.5  # the request path never waits on the broker
        wait_for(lambda: client.stats().retried >= 5, "a failed hand-off", 10)
        stats = client.stats()
        assert stats.handed_off == 0 and stats.queued == 5 and stats.dropped == {}
        assert stats.last_error == "Celery broker: OperationalError"
        with later:
            wait_for(lambda: client.stats().handed_off == 5, "the hand-off once the broker is up", 15)
            handed = [
                eid
                for m in queued_messages(later, "handoff-later")
                for b in ls_celery.unpack(task_args(m)[0])
                for eid in [json.loads(b)["event_id"]]
            ]
            assert client.stats().sent == 0  # handed off is not delivered
    finally:
        client.shutdown(1)
    assert sorted(handed) == sorted(ids)


# -- the deliver task, run eagerly in this process ------------------------------------------
@pytest.fixture
def worker_settings(fleet_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The task reads its settings from the (worker's) environment, once per process."""
    for name, value in layersync_env(fleet_hub).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ls_celery, "_worker", None)
    yield
    ls_celery.set_on_drop(None)
    made = ls_celery._worker  # the transport the task made in this process: closed before it is forgotten
    if made is not None:
        made[2].close()


def test_the_task_sends_again_only_the_events_the_hub_did_not_take(hub_store: Hub, worker_settings: None) -> None:
    full = _wire.SERVER_BATCH_MAX_EVENTS
    events = [event() for _ in range(full + 10)]  # two hub requests: a full batch and 10 events
    hub_store.faults(mode="500", count=1)  # the first request fails
    before = ls_celery.delivery_stats()
    result = ls_celery.deliver.apply(args=[ls_celery.pack([encode_event(e) for e in events]), time.time()])
    assert result.successful(), result.traceback
    assert hub_store.server_counts() == {e["event_id"]: 1 for e in events}
    attempts = hub_store.attempts()
    assert [attempts[e["event_id"]] for e in events] == [1] * full + [0] * 10  # ids kept, tries counted
    after = ls_celery.delivery_stats()
    done = (after.sent - before.sent, after.retried - before.retried, after.batches - before.batches)
    assert done == (full + 10, full, 3)


def test_the_task_gives_up_on_rejected_and_expired_events(hub_store: Hub, worker_settings: None) -> None:
    dropped: list[tuple[str, str]] = []
    ls_celery.set_on_drop(lambda e, reason: dropped.append((e["event_id"], reason)))
    good = event()
    rejected = event(event_time="yesterday")  # the hub refuses this one event of the batch
    week_old = event("purchase")
    week_old["client_meta"]["queued_at_ms"] -= 8 * 24 * 3600 * 1000  # past a purchase's 7 days
    bodies = [encode_event(e) for e in (good, rejected, week_old)]
    result = ls_celery.deliver.apply(args=[ls_celery.pack([*bodies, b"not json"]), time.time()])
    assert result.successful(), result.traceback
    assert hub_store.server_counts() == {good["event_id"]: 1}
    assert set(dropped) == {(rejected["event_id"], "rejected"), (week_old["event_id"], "expired"), (None, "invalid")}


# -- a fleet: web processes, a broker, a Celery worker, the hub ---------------------------------------
def assert_exactly_once(hub: Hub, ids: list[str], timeout: float) -> None:
    wait_for(lambda: len(hub.server_counts().keys() & set(ids)) == len(ids), f"{len(ids)} events", timeout)
    counts = hub.server_counts()
    assert {eid: counts.get(eid) for eid in ids} == dict.fromkeys(ids, 1)


def test_1000_paired_requests_per_app_reach_the_hub_exactly_once_through_a_hub_outage(
    hub_store: Hub, web_env: dict[str, str], worker: Process
) -> None:
    apps = [("uvicorn", "fleet.fastapi_shop:app"), ("gunicorn", "fleet.flask_shop:app")]
    ids: list[str] = []
    for server, target in apps:
        port = free_port()
        with web_server(server, target, web_env, port):
            url = f"http://127.0.0.1:{port}"
            batch = [new_event_id("add_to_cart") for _ in range(1000)]
            ids += batch
            assert {r.status_code for r in post_paired(url, batch[:300])} == {200}
            hub_store.down()  # the worker's deliveries fail; the app answers as ever
            assert {r.status_code for r in post_paired(url, batch[300:700])} == {200}
            wait_for(lambda: "Retry in" in worker.output(), "the worker to meet the outage", 10)
            hub_store.up()
            assert {r.status_code for r in post_paired(url, batch[700:])} == {200}
            wait_for(nothing_queued(url), "the hand-off", 10)
    assert_exactly_once(hub_store, ids, 30)
    retried = [eid for eid, n in hub_store.attempts().items() if n > 0]
    assert retried, "no event was retried: the outage was not seen"
    assert "Retry in" in worker.output()  # Celery's own record of the retries


def test_a_stale_pair_in_two_gunicorn_workers_at_once_reaches_the_hub_once(
    hub_store: Hub, web_env: dict[str, str]
) -> None:
    with RedisServer() as pairs_redis:
        port = free_port()
        env = {**web_env, "LAYERSYNC_DEDUP_URL": pairs_redis.url}
        with web_server("gunicorn", "fleet.flask_shop:app", env, port):
            ids = [new_event_id("add_to_cart") for _ in range(30)]
            # Every pair six times at once (the SDK's stale re-sends), over both workers.
            responses = post_paired(f"http://127.0.0.1:{port}", [eid for eid in ids for _ in range(6)], threads=12)
            pids: dict[str, set[int]] = {}
            for response in responses:
                eid = response.request.headers["X-LayerSync-Event-Id"]
                pids.setdefault(eid, set()).add(response.json()["pid"])
            assert sum(len(p) == 2 for p in pids.values()) >= 10, pids  # both workers got the same pair
            assert_exactly_once(hub_store, ids, 20)
            # Not a wait for something to happen: a window in which a late second copy, were
            # there one, would arrive. Nothing to poll for an absence.
            time.sleep(0.5)
            assert_exactly_once(hub_store, ids, 0)


def test_events_handed_to_the_broker_arrive_after_the_web_process_is_killed(
    hub_store: Hub, web_env: dict[str, str]
) -> None:
    hub_store.faults(mode="500")  # the worker cannot deliver yet: the events sit in the broker
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ids = [new_event_id("add_to_cart") for _ in range(100)]
    with web_server("uvicorn", "fleet.fastapi_shop:app", web_env, port) as web:
        assert {r.status_code for r in post_paired(url, ids)} == {200}
        wait_for(lambda: app_state(url)["stats"]["handed_off"] == 100, "the hand-off", 5)
        web.kill()  # SIGKILL: no exit drain, no goodbye
    assert hub_store.server_counts() == {}
    hub_store.faults()
    assert_exactly_once(hub_store, ids, 30)


def test_redis_stopped_mid_run_the_app_answers_and_pairing_falls_back(hub_store: Hub, web_env: dict[str, str]) -> None:
    pairs_redis = RedisServer().start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    before, during, after = ([new_event_id("add_to_cart") for _ in range(50)] for _ in range(3))
    try:
        with web_server("uvicorn", "fleet.fastapi_shop:app", {**web_env, "LAYERSYNC_DEDUP_URL": pairs_redis.url}, port):
            post_paired(url, before)
            wait_for(lambda: app_state(url)["stats"]["handed_off"] == 50, "the first hand-off", 5)
            assert app_state(url)["dedup_fallbacks"] == 0
            pairs_redis.stop()
            started = time.monotonic()
            assert {r.status_code for r in post_paired(url, during)} == {200}
            assert time.monotonic() - started < 5  # 50 requests: nothing waits on Redis
            wait_for(lambda: app_state(url)["stats"]["handed_off"] == 100, "the hand-off without Redis", 5)
            assert app_state(url)["dedup_fallbacks"] == 50
            pairs_redis.start()
            # The scenario's clock, in the app's process: it asks Redis again only once
            # RETRY_AFTER has passed since the failure; there is nothing to poll from here.
            time.sleep(1.0)
            post_paired(url, after)
            wait_for(lambda: app_state(url)["stats"]["handed_off"] == 150, "the hand-off with Redis back", 5)
            assert app_state(url)["dedup_fallbacks"] == 50
            claims = pairs_redis.client().keys(f"layersync:header:{SITE.site_id}:*")
            assert len(claims) == 50
    finally:
        pairs_redis.stop()
    assert_exactly_once(hub_store, before + during + after, 20)


# -- set-ups as Celery users have them, each worker started as a user starts it ------------------
DJANGO_PROJECT = ROOT / "example_apps" / "django_celery"
FASTAPI_APP = "example_apps.fastapi_celery"
# Variables of this test run that a user's processes would not have.
UNSET: dict[str, str | None] = {"CELERY_BROKER_URL": None, "LAYERSYNC_SENDER": None}


def db(broker: RedisServer, n: int) -> str:
    """One Redis database per set-up: a message one case leaves behind is not another's."""
    return f"redis://127.0.0.1:{broker.port}/{n}"


def user_worker(env: dict[str, str | None], app: str = FASTAPI_APP, cwd: Path = ROOT) -> Process:
    """``celery -A <app> worker -l info``: no queue, no include, no concurrency given."""
    return celery_worker(env, app=app, cwd=cwd, concurrency=None, extra=())


def post_orders(url: str, n: int) -> list[str]:
    """``track("purchase")`` in a view, ``n`` times; the ids it returned."""
    with httpx.Client(base_url=url, timeout=10) as http:
        return [str(http.post("/api/order").json()["event_id"]) for _ in range(n)]


def handed_off(url: str, n: int) -> Callable[[], bool]:
    return lambda: app_state(url)["stats"]["handed_off"] == n


@pytest.fixture
def fastapi_env(hub_store: Hub, broker: RedisServer) -> dict[str, str | None]:
    """The FastAPI example's settings: its broker in code (``SHOP_BROKER_URL`` feeds it), LayerSync's in the env."""
    return {**UNSET, "SHOP_BROKER_URL": db(broker, 2), **layersync_env(hub_store)}


def test_a_django_project_made_as_celerys_guide_delivers_every_event_with_the_guides_worker(
    hub_store: Hub, broker: RedisServer
) -> None:
    # The broker and LayerSync's credentials are Django settings only: no LAYERSYNC_* in either env.
    env: dict[str, str | None] = {
        **UNSET,
        **dict.fromkeys(layersync_env(hub_store)),
        "SHOP_BROKER_URL": db(broker, 1),
        "SHOP_SITE_ID": SITE.site_id,
        "SHOP_SECRET": SECRET,
        "SHOP_HUB_URL": hub_store.url,
    }
    assert "System check identified no issues" in run([sys.executable, "manage.py", "check"], env, DJANGO_PROJECT)
    worker = user_worker(env, "proj", DJANGO_PROJECT)
    try:
        assert ls_celery.TASK_NAME in worker.output()  # the banner's [tasks]: autodiscover_tasks() found it
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with web_server("gunicorn", "proj.wsgi", env, port, cwd=DJANGO_PROJECT, workers=1):
            paired = [new_event_id("add_to_cart") for _ in range(20)]
            assert {r.status_code for r in post_paired(url, paired)} == {200}
            ordered = post_orders(url, 10)
            wait_for(handed_off(url, 30), "the hand-off", 10)
            assert app_state(url)["stats"]["sent"] == 0  # handed off is not delivered
            assert_exactly_once(hub_store, paired + ordered, 20)
    finally:
        worker.stop()


def shop_delivers_every_event(env: dict[str, str | None], hub: Hub) -> None:
    """The FastAPI example under uvicorn and its worker: 20 paired requests and 10 ``track()``
    calls are handed off (not counted as sent) and reach the hub once each."""
    worker = user_worker(env)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with web_server("uvicorn", f"{FASTAPI_APP}.web:app", env, port):
            paired = [new_event_id("add_to_cart") for _ in range(20)]
            assert {r.status_code for r in post_paired(url, paired)} == {200}
            ordered = post_orders(url, 10)
            wait_for(handed_off(url, 30), "the hand-off from the sender thread", 10)
            assert app_state(url)["stats"]["sent"] == 0
            assert_exactly_once(hub, paired + ordered, 20)
    finally:
        worker.stop()


def test_a_fastapi_app_with_the_broker_in_code_delivers_every_event_and_shows_the_workers_counts(
    fastapi_env: dict[str, str | None], hub_store: Hub, broker: RedisServer
) -> None:
    shop_delivers_every_event(fastapi_env, hub_store)
    # What the workers did, from the web side: a hash in the broker's Redis.
    app = Celery("reader", broker=db(broker, 2), set_as_current=False)
    wait_for(lambda: ls_celery.worker_stats(app, SITE.site_id).get("delivered", 0) >= 30, "the counts", 5)


def test_a_worker_with_another_key_loses_nothing_says_so_and_the_events_arrive_once_one_has_the_key(
    fastapi_env: dict[str, str | None], hub_store: Hub, layersync_cli: Said
) -> None:
    wrong = user_worker({**fastapi_env, "LAYERSYNC_SECRET": "sk_wrong_secret_key_0000"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with web_server("uvicorn", f"{FASTAPI_APP}.web:app", fastapi_env, port) as web:
        ids = [new_event_id("add_to_cart") for _ in range(20)]
        try:
            post_paired(url, ids)
            wrong.wait_for_output("cannot deliver LayerSync events: its secret key (fingerprint", 15)

            # The web process hears of it through Redis on a later hand-off, at WARNING.
            def heard() -> bool:
                if "a Celery worker" in web.output():
                    return True
                ids.append(new_event_id("add_to_cart"))  # another hand-off, which brings the news
                post_paired(url, ids[-1:])
                return False

            wait_for(heard, "the web process to hear of the worker's key", 15, interval=0.25)  # paced requests
            assert "cannot deliver: its secret key (fingerprint" in layersync_cli("send-test-event", 1)
        finally:
            said = wrong.stop()
        assert hub_store.server_counts() == {}
        assert "WARNING" in said and "wait in the broker for a worker that can" in said
        assert "WARNING" in web.output() and "cannot deliver LayerSync events: its secret key" in web.output()
        assert "sk_wrong" not in said + web.output()
        right = user_worker(fastapi_env)  # the key fixed, as a deploy would
        try:
            assert_exactly_once(hub_store, ids, 30)
            out = layersync_cli("send-test-event", 0)
            assert "delivered a test event" in out and "HTTP 200" in out and "ok: delivered through a worker" in out
        finally:
            right.stop()
    assert len(hub_store.server_counts()) == len(ids) + 1  # and the test event, once


def test_celery_broker_url_overriding_the_apps_broker_is_said_at_start_up(
    fastapi_env: dict[str, str | None], broker: RedisServer
) -> None:
    # Celery itself lets the variable win, in the web process and in the workers; the
    # existing fleet tests run every process with it and deliver everything.
    env = {**fastapi_env, "CELERY_BROKER_URL": db(broker, 3)}
    port = free_port()
    with web_server("uvicorn", f"{FASTAPI_APP}.web:app", env, port) as web:
        said = (
            f"CELERY_BROKER_URL ({db(broker, 3)}) overrides the broker your Celery app 'shop' names ({db(broker, 2)})"
        )
        assert f"[LayerSync] WARNING {said}" in web.output()


def test_a_worker_without_the_task_logs_no_event_data_when_it_discards_one(broker: RedisServer) -> None:
    env: dict[str, str | None] = {**UNSET, "SHOP_BROKER_URL": db(broker, 4)}
    bare = user_worker(env, "fleet.bare_celery")
    try:
        private = {"client_ip_address": "203.0.113.77", "user_agent": "PrivateAgent/9.9"}
        leaky = event(event_source_url="https://shop.example/private-page", user_data=private)
        transport = ls_celery.HandoffTransport(settings(), Celery("web", broker=db(broker, 4), set_as_current=False))
        try:
            assert transport.send([leaky], [encode_event(leaky)], 5.0) == [Outcome("ok")]
        finally:
            transport.close()
        bare.wait_for_output("unregistered task", 15)
    finally:
        log = bare.stop()
    for secret in ("203.0.113.77", "PrivateAgent", "private-page", leaky["event_id"]):
        assert secret not in log


Said = Callable[[str, int], str]


@pytest.fixture
def layersync_cli(
    hub_store: Hub, broker: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Said:
    """``layersync <command>`` with the Celery sender, the FastAPI example's app named, its
    broker on database 2: returns what it printed, after checking its exit status."""
    for name, value in {**layersync_env(hub_store), "LAYERSYNC_SENDER": "celery"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAYERSYNC_CELERY_APP", f"{FASTAPI_APP}.celery:app")
    monkeypatch.setenv("LAYERSYNC_TIMEOUT_MS", "1000")  # each probe waits this long for the workers' answers
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("SHOP_BROKER_URL", db(broker, 2))
    monkeypatch.delitem(sys.modules, f"{FASTAPI_APP}.celery", raising=False)  # its broker= is read at import

    def said(command: str, code: int) -> str:
        assert cli.main([command]) == code
        out = capsys.readouterr()
        assert "HTTP None" not in out.out + out.err
        return out.out + out.err

    return said


def test_send_test_event_and_check_name_a_broker_that_is_down_and_a_missing_worker(
    layersync_cli: Said, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "worker: none answered" in layersync_cli("check", 1)
    assert "worker: none answered" in layersync_cli("send-test-event", 1)
    monkeypatch.setenv("SHOP_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.delitem(sys.modules, f"{FASTAPI_APP}.celery")
    assert "broker: unreachable" in layersync_cli("send-test-event", 1)


def test_a_killed_worker_gives_its_messages_back_after_the_visibility_timeout(
    fastapi_env: dict[str, str | None], hub_store: Hub, broker: RedisServer
) -> None:
    env = {**fastapi_env, "SHOP_BROKER_URL": db(broker, 5)}
    hub_store.faults(mode="hang", hang_seconds=30)  # the task is mid-delivery when its worker dies
    victim = user_worker(env, "fleet.short_visibility")
    try:
        web_side = Celery("web", broker=db(broker, 5), set_as_current=False)
        transport = ls_celery.HandoffTransport(settings(api_url=hub_store.url), web_side)
        events = [event() for _ in range(10)]
        try:
            assert transport.send(events, [encode_event(e) for e in events], 5.0) == [Outcome("ok")] * 10
        finally:
            transport.close()
        victim.wait_for_output(f"Task {ls_celery.TASK_NAME}[", 15)
    finally:
        victim.kill_all()  # SIGKILL, children too: nothing acknowledges, nothing is put back by the worker
        victim.stop()
    hub_store.faults()
    # The message waits, unacknowledged, until it is older than the visibility timeout;
    # a worker that starts then (or a running one, at its next scan) takes it.
    held = redis.Redis.from_url(db(broker, 5))

    def past_the_timeout() -> bool:
        scores: list[tuple[bytes, float]] = held.zrange("unacked_index", 0, -1, withscores=True)  # type: ignore[assignment]
        return any(time.time() - at > 2.2 for _, at in scores)

    wait_for(past_the_timeout, "the held message to pass the visibility timeout", 10)
    heir = user_worker(env, "fleet.short_visibility")
    try:
        assert_exactly_once(hub_store, [e["event_id"] for e in events], 20)
    finally:
        heir.stop()


def test_the_hand_off_never_falls_back_to_celerys_default_app() -> None:
    # A process with no Celery app and no CELERY_BROKER_URL: the client refuses to start,
    # naming the setting, instead of publishing to amqp://guest@localhost.
    code = "from layersync_middleware import LayerSync\nLayerSync(site_id='s', secret_key='sk_x', sender='celery')"
    said = run([sys.executable, "-c", code], UNSET)
    assert "ConfigurationError: celery_app: is not set and no Celery app was made" in said


def test_a_rabbitmq_broker_delivers_every_event(fastapi_env: dict[str, str | None], hub_store: Hub) -> None:
    with RabbitMQServer() as rabbitmq:
        shop_delivers_every_event({**fastapi_env, "SHOP_BROKER_URL": rabbitmq.url}, hub_store)


def test_the_worker_reads_flask_config_inside_an_app_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flask's Celery pattern runs each task in an app context: the worker then reads the
    # LayerSync settings the web process reads, from app.config.
    from flask import Flask

    for name in ("LAYERSYNC_SITE_ID", "LAYERSYNC_SECRET", "LAYERSYNC_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ls_celery, "_worker", None)
    flask_app = Flask("shop")
    flask_app.config.update(LAYERSYNC_SITE_ID="site_flask", LAYERSYNC_SECRET=SECRET)
    with flask_app.app_context():
        settings_read, transport = ls_celery._hub_transport()
    transport.close()
    monkeypatch.setattr(ls_celery, "_worker", None)
    assert settings_read.site_id == "site_flask" and settings_read.secret_key.reveal() == SECRET
    with pytest.raises(ConfigurationError, match="LAYERSYNC_SITE_ID"):  # outside it: the environment, empty here
        ls_celery._hub_transport()
