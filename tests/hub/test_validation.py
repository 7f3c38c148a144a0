"""Hostile bodies (the publishable key is public) and wrong fault settings are a 400,
and the hub keeps working after them: the events feed never starts answering 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from layersync_middleware.hub import HubSite, create_hub
from layersync_middleware.hub.app import MAX_DEPTH

# A loopback peer: the page and /api/hub/* refuse others (TestClient's default is "testclient").
LOCAL = ("127.0.0.1", 50000)
SITE = HubSite("site_v", "pk_v_pub", "sk_v_secret")
BROWSER = {"X-LayerSync-Api-Key": "pk_v_pub", "X-LayerSync-Site-Id": "site_v", "Content-Type": "application/json"}
SERVER = {"Authorization": "Bearer sk_v_secret", "X-LayerSync-Site-Id": "site_v"}
HEAD = '{"site_id":"site_v","event_id":"x_0001","event_name":"x","event_time":1,'


@pytest.fixture
def hub_asgi() -> Iterator[TestClient]:
    with TestClient(create_hub([SITE]), base_url="http://127.0.0.1", client=LOCAL) as client:
        yield client


def nested(depth: int) -> str:
    """custom_data nested so that the whole body is ``depth`` containers deep."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return HEAD + '"custom_data":{"v":' + inner + "}}"


def feed_works(hub_asgi: TestClient) -> bool:
    return all(hub_asgi.get(path).status_code == 200 for path in ("/api/hub/events", "/api/hub/groups"))


@pytest.mark.parametrize(
    "body",
    [
        HEAD + '"custom_data":{"v":NaN}}',
        HEAD + '"custom_data":{"v":-Infinity}}',
        HEAD + '"user_data":{"v":1e400}}',
        HEAD + '"custom_data":{"v":"\\ud800"}}',  # an unpaired surrogate: no UTF-8 for it
        nested(MAX_DEPTH + 1),
        nested(962),  # parses, but re-encoding it inside the feed overflowed
        nested(200_000),  # deeper than the parser itself goes
    ],
    ids=["nan", "infinity", "1e400", "surrogate", "depth-33", "depth-962", "depth-200k"],
)
@pytest.mark.parametrize("batch", [False, True])
def test_unservable_json_is_a_400_and_the_feed_keeps_working(hub_asgi: TestClient, body: str, batch: bool) -> None:
    if batch:
        body = '{"events":[' + body + "]}"
    path = "/api/v1/events/browser" + ("/batch" if batch else "")
    r = hub_asgi.post(path, content=body, headers=BROWSER)
    assert r.status_code == 400 and "error" in r.json()
    assert feed_works(hub_asgi) and hub_asgi.get("/api/hub/events").json()["events"] == []


def test_nesting_up_to_the_limit_is_stored_and_served(hub_asgi: TestClient) -> None:
    r = hub_asgi.post("/api/v1/events/browser", content=nested(MAX_DEPTH), headers=BROWSER)
    assert r.status_code == 200
    assert feed_works(hub_asgi) and len(hub_asgi.get("/api/hub/events").json()["events"]) == 1


def test_a_huge_integer_is_a_400(hub_asgi: TestClient) -> None:
    r = hub_asgi.post(
        "/api/v1/events/browser", content=HEAD + '"custom_data":{"v":' + "9" * 5000 + "}}", headers=BROWSER
    )
    assert r.status_code == 400 and feed_works(hub_asgi)


@pytest.mark.parametrize(
    ("faults", "named"),
    [
        ({"mode": "429", "count": "1"}, "count"),
        ({"count": -1}, "count"),
        ({"count": 1.5}, "count"),
        ({"rate": True}, "rate"),
        ({"rate": 2}, "rate"),
        ({"rate": "0.5"}, "rate"),
        ({"every": 0}, "every"),
        ({"retry_after": 1.5}, "retry_after"),
        ({"retry_after": "7"}, "retry_after"),
        ({"hang_seconds": 1e12}, "hang_seconds"),
        ({"hang_seconds": None}, "hang_seconds"),
        ({"drip_ms": 0}, "drip_ms"),
        ({"mode": "teapot"}, "mode"),
        ({"mode": 500}, "mode"),
        ({"target": "everything"}, "target"),
        ({"bogus": 1}, "bogus"),
        ([1, 2], "object"),
        ("500", "object"),
    ],
)
def test_wrong_fault_settings_are_a_400_naming_the_field(hub_asgi: TestClient, faults: object, named: str) -> None:
    hub_asgi.post("/api/hub/faults", json={"mode": "500", "count": 5})
    r = hub_asgi.post("/api/hub/faults", content=json.dumps(faults), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and named in r.json()["error"]
    assert hub_asgi.get("/api/hub/faults").json()["count"] == 5  # the faults in force are untouched
    hub_asgi.post("/api/hub/faults", json={"mode": None})
    event = {"site_id": "site_v", "event_id": "pur_1", "event_name": "purchase", "event_time": int(time.time())}
    assert hub_asgi.post("/api/v1/events/server", json=event, headers=SERVER).status_code == 200


def test_fault_settings_round_trip(hub_asgi: TestClient) -> None:
    settings = {"mode": "drip", "target": "all", "rate": 0.5, "every": 2, "count": 3, "drip_ms": 5}
    shown = hub_asgi.post("/api/hub/faults", json=settings).json()
    assert shown == {**shown, **settings} and shown["hits"] == 0
    assert hub_asgi.post("/api/hub/faults", json=shown).status_code == 200  # a GET's answer posts back


def test_a_body_that_is_not_gzip_or_too_long_without_a_length_is_refused(hub_asgi: TestClient) -> None:
    r = hub_asgi.post("/api/v1/events/server", content=b"plain json", headers={**SERVER, "Content-Encoding": "gzip"})
    assert (r.status_code, r.json()) == (400, {"error": "body is not valid gzip"})

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to refuse it by
        for _ in range(5):
            yield b" " * (300 * 1024)

    r = hub_asgi.post("/api/v1/events/server", content=chunks(), headers=SERVER)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert feed_works(hub_asgi)


@pytest.mark.parametrize(
    ("query", "status", "said"),
    [
        ("", 400, "event_id (and site_id when the hub has several sites) are required"),
        ("event_id=x_0001&unpaired_after=soon", 400, "unpaired_after must be a number, got 'soon'"),
        ("event_id=x_0001&unpaired_after=-1", 400, "unpaired_after must be a finite number >= 0"),
        ("event_id=x_0001&unpaired_after=inf", 400, "unpaired_after must be a finite number >= 0"),
        ("event_id=" + "x" * 257, 400, "event_id is too long"),
        ("event_id=x_0404", 404, "no event carries this event_id (evicted, reset, or never received)"),
    ],
)
def test_a_wrong_question_about_one_id_is_answered_with_why(
    hub_asgi: TestClient, query: str, status: int, said: str
) -> None:
    r = hub_asgi.get("/api/hub/group?" + query)
    assert (r.status_code, r.json()) == (status, {"error": said})


def test_a_dashboard_filter_that_is_not_a_time_is_a_400(hub_asgi: TestClient) -> None:
    r = hub_asgi.get("/api/hub/dashboard?since=yesterday")
    assert (r.status_code, r.json()) == (400, {"error": "since must be a number, got 'yesterday'"})
    assert hub_asgi.get("/api/hub/dashboard?since=0").status_code == 200
