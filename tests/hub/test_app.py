from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from layersync_middleware import _wire
from layersync_middleware._event import new_event_id
from layersync_middleware.hub import Faults, HubSite, create_hub
from layersync_middleware.hub.faults import FaultSwitch

# A loopback peer: the page and /api/hub/* refuse others (TestClient's default is "testclient").
LOCAL = ("127.0.0.1", 50000)
SITE = HubSite("site_h", "pk_h_pub", "sk_h_secret")
SERVER = {"Authorization": "Bearer sk_h_secret", "X-LayerSync-Site-Id": "site_h"}
BROWSER = {"X-LayerSync-Api-Key": "pk_h_pub", "X-LayerSync-Site-Id": "site_h"}


def event(name: str = "purchase", event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "site_id": "site_h",
        "event_id": event_id or new_event_id(name),
        "event_name": name,
        "event_time": int(time.time()),
        "user_data": {},
        "custom_data": {},
        **extra,
    }


@pytest.fixture
def hub_asgi() -> Iterator[TestClient]:
    # A loopback base URL: the page and /api/hub/* refuse other Host headers.
    with TestClient(create_hub([SITE]), base_url="http://127.0.0.1", client=LOCAL) as client:
        yield client


def groups(hub_asgi: TestClient) -> list[dict[str, Any]]:
    return list(hub_asgi.get("/api/hub/groups").json()["groups"])


def test_server_key_only_on_server_endpoints(hub_asgi: TestClient) -> None:
    assert hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER).status_code == 200
    assert (
        hub_asgi.post(
            "/api/v1/events/browser", json=event(), headers={**BROWSER, "X-LayerSync-Api-Key": "sk_h_secret"}
        ).status_code
        == 401
    )
    assert (
        hub_asgi.post(
            "/api/v1/events/server", json=event(), headers={**SERVER, "Authorization": "Bearer pk_h_pub"}
        ).status_code
        == 401
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk_wrong", "X-LayerSync-Site-Id": "site_h"},
        {"Authorization": "sk_h_secret", "X-LayerSync-Site-Id": "site_h"},
        {"Authorization": "Bearer sk_h_secret", "X-LayerSync-Site-Id": "other"},
    ],
)
def test_wrong_or_missing_key_is_401_and_not_stored(hub_asgi: TestClient, headers: dict[str, str]) -> None:
    r = hub_asgi.post("/api/v1/events/server", json=event(), headers=headers)
    assert r.status_code == 401 and "key" in r.json()["error"]
    assert groups(hub_asgi) == []


def test_beacon_query_string_auth(hub_asgi: TestClient) -> None:
    body = json.dumps(event("page_view"))
    r = hub_asgi.post(
        "/api/v1/events/browser?_ls_api_key=pk_h_pub&_ls_site_id=site_h",
        content=body,
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200 and groups(hub_asgi)[0]["browser"] == 1


def test_dedupe_groups(hub_asgi: TestClient) -> None:
    eid = new_event_id("add_to_cart")
    hub_asgi.post("/api/v1/events/browser", json=event("add_to_cart", eid), headers=BROWSER)
    hub_asgi.post("/api/v1/events/server", json=event("add_to_cart", eid), headers=SERVER)
    r = hub_asgi.post("/api/v1/events/server", json=event("add_to_cart", eid), headers=SERVER)
    assert r.json()["duplicate"] is True
    hub_asgi.post("/api/v1/events/server", json=event("purchase", eid), headers=SERVER)  # another name: another group
    by_name = {g["event_name"]: g for g in groups(hub_asgi)}
    assert by_name["add_to_cart"]["paired"] and by_name["add_to_cart"]["duplicates"] == 1
    assert by_name["add_to_cart"]["sources"] == ["browser", "server"]
    assert by_name["purchase"]["sources"] == ["server"] and not by_name["purchase"]["paired"]


def test_batch_with_per_event_results_and_gzip(hub_asgi: TestClient) -> None:
    good, bad = event("lead"), event("lead", site_id="someone_else")
    body = gzip.compress(json.dumps({"events": [good, bad]}).encode())
    r = hub_asgi.post("/api/v1/events/server/batch", content=body, headers={**SERVER, "Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["ok", "drop"]
    assert len(groups(hub_asgi)) == 1


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"[]", 422),
        (json.dumps({"event_id": "x"}).encode(), 422),
        (json.dumps({**event(), "event_time": "now"}).encode(), 422),
        (json.dumps({**event(), "user_data": []}).encode(), 422),
        (b"x" * (1024 * 1024 + 1), 413),
    ],
)
def test_validation(hub_asgi: TestClient, content: bytes, status: int) -> None:
    r = hub_asgi.post("/api/v1/events/server", content=content, headers=SERVER)
    assert r.status_code == status and "error" in r.json()
    assert groups(hub_asgi) == []


def test_gzip_bomb_is_refused(hub_asgi: TestClient) -> None:
    bomb = gzip.compress(b"[" + b" " * (5 * 1024 * 1024) + b"]")
    r = hub_asgi.post("/api/v1/events/server", content=bomb, headers={**SERVER, "Content-Encoding": "gzip"})
    assert r.status_code == 413


def test_batch_limits(hub_asgi: TestClient) -> None:
    most = _wire.SERVER_BATCH_MAX_EVENTS  # the server's batches: our contract, docs/wire.md section 6
    ok = hub_asgi.post("/api/v1/events/server/batch", json={"events": [event() for _ in range(most)]}, headers=SERVER)
    assert ok.status_code == 200
    r = hub_asgi.post(
        "/api/v1/events/server/batch", json={"events": [event() for _ in range(most + 1)]}, headers=SERVER
    )
    assert r.status_code == 413
    assert hub_asgi.post("/api/v1/events/server/batch", json={"events": []}, headers=SERVER).status_code == 422


def test_config_with_etag(hub_asgi: TestClient) -> None:
    r = hub_asgi.get("/api/v1/config/platforms?site_id=site_h&sdk=x", headers=BROWSER)
    assert r.status_code == 200 and r.json()["retry_policy"]["purchase"]["max_attempts"] == 20
    etag = r.headers["etag"]
    assert hub_asgi.get("/api/v1/config/platforms?site_id=site_h", headers={"If-None-Match": etag}).status_code == 304
    assert hub_asgi.get("/api/v1/config/platforms?site_id=nope").status_code == 404


def test_cors_preflight_for_the_browser_sdk(hub_asgi: TestClient) -> None:
    r = hub_asgi.options(
        "/api/v1/events/browser",
        headers={
            "Origin": "http://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-layersync-api-key,x-layersync-site-id",
        },
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_fault_injection_500_429_and_count(hub_asgi: TestClient) -> None:
    hub_asgi.post("/api/hub/faults", json={"mode": "429", "retry_after": 7, "count": 1})
    r = hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER).status_code == 200
    hub_asgi.post("/api/hub/faults", json={"mode": "500"})
    assert hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER).status_code == 500
    assert hub_asgi.post("/api/v1/events/browser", json=event(), headers=BROWSER).status_code == 200  # target: server
    assert hub_asgi.get("/api/hub/faults").json()["hits"] == 1  # counted since the faults were set
    assert hub_asgi.post("/api/hub/faults", json={"mode": "teapot"}).status_code == 400


def test_fault_rate_is_a_share() -> None:
    switch = FaultSwitch(Faults(mode="500", rate=0.5))
    hits = sum(switch.pick("server") is not None for _ in range(2000))
    assert 800 < hits < 1200 and switch.hits == hits


def test_reset_clears_events_and_faults(hub_asgi: TestClient) -> None:
    hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER)
    hub_asgi.post("/api/hub/faults", json={"mode": "500"})
    assert hub_asgi.post("/api/hub/reset", json={}).json() == {"status": "ok"}
    assert groups(hub_asgi) == [] and hub_asgi.get("/api/hub/faults").json()["mode"] is None


def test_sqlite_file_survives_a_restart(tmp_path: Any) -> None:
    db = str(tmp_path / "hub.sqlite3")
    with TestClient(create_hub([SITE], database=db), base_url="http://127.0.0.1", client=LOCAL) as hub_asgi:
        hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER)
    with TestClient(create_hub([SITE], database=db), base_url="http://127.0.0.1", client=LOCAL) as hub_asgi:
        assert len(groups(hub_asgi)) == 1


def test_page_is_served(hub_asgi: TestClient) -> None:
    r = hub_asgi.get("/")
    assert r.status_code == 200 and "Dedupe groups" in r.text and "/page.js" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "/api/hub/groups" in hub_asgi.get("/page.js").text


def test_list_endpoints_page_and_say_when_they_cut(hub_asgi: TestClient) -> None:
    for _ in range(5):
        body = {"events": [event("lead") for _ in range(50)]}
        hub_asgi.post("/api/v1/events/server/batch", json=body, headers=SERVER).raise_for_status()
    first = hub_asgi.get("/api/hub/events").json()  # the default page: 200 of 250
    assert len(first["events"]) == 200 and first["truncated"] is True
    rest = hub_asgi.get("/api/hub/events", params={"before": first["next"]}).json()
    assert len(rest["events"]) == 50 and rest["truncated"] is False and rest["next"] is None
    assert {e["seq"] for e in first["events"]}.isdisjoint(e["seq"] for e in rest["events"])
    groups = hub_asgi.get("/api/hub/groups", params={"limit": 100}).json()
    assert len(groups["groups"]) == 100 and groups["truncated"] and groups["total"] == 250
    assert groups["counts"]["server_only"] == 250 and groups["store"]["events"] == 250


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=x", "before=-1", "verdict=maybe", "since=soon", "unpaired_after=-1"]
)
def test_list_parameters_are_checked(hub_asgi: TestClient, query: str) -> None:
    path = "/api/hub/events" if query.startswith("before") else "/api/hub/groups"
    r = hub_asgi.get(f"{path}?{query}")
    assert r.status_code == 400 and query.split("=")[0] in r.json()["error"]


def test_groups_answer_304_until_something_changes(hub_asgi: TestClient) -> None:
    r = hub_asgi.get("/api/hub/groups")
    assert hub_asgi.get("/api/hub/groups", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    hub_asgi.post("/api/v1/events/server", json=event(), headers=SERVER)
    assert hub_asgi.get("/api/hub/groups", headers={"If-None-Match": r.headers["etag"]}).status_code == 200


def test_group_and_dashboard(hub_asgi: TestClient) -> None:
    eid = new_event_id("purchase")
    hub_asgi.post("/api/v1/events/browser", json=event("purchase", eid), headers=BROWSER)
    hub_asgi.post("/api/v1/events/server", json=event("purchase", eid), headers=SERVER)
    doc = hub_asgi.get("/api/hub/group", params={"event_id": eid}).json()
    assert doc["verdict"] == "paired" and doc["previews"]["meta"]["body"]["data"][0]["event_name"] == "Purchase"
    assert hub_asgi.get("/api/hub/group", params={"event_id": "nope"}).status_code == 404
    dash = hub_asgi.get("/api/hub/dashboard").json()
    assert dash["coverage"] == 100.0 and dash["goal"] == 75 and dash["names"][0]["event_name"] == "purchase"
