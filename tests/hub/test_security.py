"""Who may call what on the hub, over real HTTP with forged Origin and Host headers:
a page on another origin, or a DNS-rebound name, can neither read the stored events
nor reset the store or inject faults; the browser SDK can still post cross-origin."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from layersync_middleware.hub import HubServer, HubSite, create_hub

SITE = HubSite("site_s", "pk_s_pub", "sk_s_secret")
SERVER = {"Authorization": "Bearer sk_s_secret", "X-LayerSync-Site-Id": "site_s"}
BROWSER = {"X-LayerSync-Api-Key": "pk_s_pub", "X-LayerSync-Site-Id": "site_s"}
EVIL = "http://evil.example"
INSPECTION = ["/", "/api/hub/events", "/api/hub/groups", "/api/hub/faults"]


def event(n: int) -> dict[str, object]:
    return {"site_id": "site_s", "event_id": f"pur_{n:016x}", "event_name": "purchase", "event_time": int(time.time())}


@pytest.fixture(scope="module")
def server() -> Iterator[HubServer]:
    with HubServer(create_hub([SITE], allowed_hosts=["hub.internal"])) as server:
        yield server


@pytest.fixture
def http(server: HubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        client.post("/api/hub/reset", json={}).raise_for_status()
        client.post("/api/v1/events/server", json=event(1), headers=SERVER).raise_for_status()
        yield client


def stored(http: httpx.Client) -> int:
    return len(http.get("/api/hub/events").json()["events"])


@pytest.mark.parametrize("path", INSPECTION)
def test_a_page_on_another_origin_cannot_read(http: httpx.Client, path: str) -> None:
    r = http.get(path, headers={"Origin": EVIL})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    assert "purchase" not in r.text


@pytest.mark.parametrize("path", INSPECTION)
def test_a_dns_rebound_name_cannot_read(http: httpx.Client, server: HubServer, path: str) -> None:
    # evil.example resolving to 127.0.0.1: same origin to the browser, wrong Host to the hub.
    r = http.get(path, headers={"Host": f"evil.example:{server.port}"})
    assert r.status_code == 403 and "loopback" in r.json()["error"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.0.0.2", "LOCALHOST", "hub.internal:8787"]
)
def test_loopback_and_allowed_hosts_may_read(http: httpx.Client, server: HubServer, host: str) -> None:
    r = http.get("/api/hub/events", headers={"Host": host.format(port=server.port)})
    assert r.status_code == 200 and len(r.json()["events"]) == 1


@pytest.mark.parametrize(
    "host", ["localhost.evil.example", "127.0.0.1.nip.io", "evil.localhost", "user@127.0.0.1", "0.0.0.0", ""]
)
def test_look_alike_hosts_are_refused(http: httpx.Client, host: str) -> None:
    assert http.get("/api/hub/events", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "mode=500"),
        ("multipart/form-data; boundary=x", "--x--"),
        ("text/plain", '{"mode": "500"}'),  # what a no-preflight fetch() can send
        (None, ""),
    ],
)
@pytest.mark.parametrize("path", ["/api/hub/reset", "/api/hub/faults"])
def test_control_routes_take_only_a_json_body(
    http: httpx.Client, path: str, content_type: str | None, body: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = http.post(path, content=body, headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    assert stored(http) == 1 and http.get("/api/hub/faults").json()["mode"] is None
    assert http.post("/api/v1/events/server", json=event(2), headers=SERVER).status_code == 200


@pytest.mark.parametrize("path", ["/api/hub/reset", "/api/hub/faults"])
def test_control_routes_refuse_other_origins_and_hosts(http: httpx.Client, server: HubServer, path: str) -> None:
    assert http.post(path, json={"mode": "500"}, headers={"Origin": EVIL}).status_code == 403
    assert http.post(path, json={"mode": "500"}, headers={"Origin": "null"}).status_code == 403
    assert http.post(path, json={"mode": "500"}, headers={"Host": f"evil.example:{server.port}"}).status_code == 403
    preflight = http.options(path, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert stored(http) == 1 and http.get("/api/hub/faults").json()["mode"] is None


def test_the_page_itself_may_drive_the_hub(http: httpx.Client, server: HubServer) -> None:
    same_origin = {"Origin": server.url}
    assert http.post("/api/hub/faults", json={"mode": "500"}, headers=same_origin).status_code == 200
    assert http.post("/api/v1/events/server", json=event(3), headers=SERVER).status_code == 500
    assert http.post("/api/hub/reset", json={}, headers=same_origin).status_code == 200
    assert stored(http) == 0


def test_the_browser_sdk_still_posts_cross_origin(http: httpx.Client) -> None:
    shop = {"Origin": "http://shop.example"}
    preflight = http.options(
        "/api/v1/events/browser",
        headers={
            **shop,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-layersync-api-key,x-layersync-site-id",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    r = http.post("/api/v1/events/browser", json={**event(4), "event_name": "page_view"}, headers={**BROWSER, **shop})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    config = http.get("/api/v1/config/platforms?site_id=site_s", headers=shop)
    assert config.status_code == 200 and config.headers["access-control-allow-origin"] == "*"


def test_server_ingest_has_no_cors_and_no_host_rule(http: httpx.Client) -> None:
    # Servers reach the hub by whatever name their network gives it (a docker service).
    r = http.post("/api/v1/events/server", json=event(5), headers={**SERVER, "Host": "layersync-hub:8787"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = http.options("/api/v1/events/server", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
