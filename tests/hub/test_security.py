"""Who may call what on the hub, over real HTTP with forged Origin and Host headers:
a page on another origin, or a DNS-rebound name, can neither read the stored events
nor reset the store or inject faults; the browser SDK can still post cross-origin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

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


# -- a hub bound to 0.0.0.0: the page and /api/hub/* answer this machine only -----------------
def local_hub(peer: str, **options: Any) -> TestClient:
    return TestClient(create_hub([SITE], **options), base_url="http://127.0.0.1", client=(peer, 40000))


@pytest.mark.parametrize("peer", ["203.0.113.7", "10.1.2.3", "2001:db8::7", "::ffff:192.0.2.1", "testclient"])
@pytest.mark.parametrize("path", [*INSPECTION, "/page.js"])
def test_a_peer_on_the_network_cannot_read(peer: str, path: str) -> None:
    with local_hub(peer) as hub:
        r = hub.get(path)
        assert r.status_code == 403 and "loopback peer" in r.json()["error"]


@pytest.mark.parametrize("path", ["/api/hub/reset", "/api/hub/faults"])
def test_a_peer_on_the_network_cannot_drive_the_hub(path: str) -> None:
    with local_hub("203.0.113.7") as hub:
        assert hub.post(path, json={"mode": "500"}).status_code == 403
        # ...but may still post events (a server in a docker network does)
        assert hub.post("/api/v1/events/server", json=event(7), headers=SERVER).status_code == 200
        assert hub.app.hub.faults.faults.mode is None and hub.app.hub.store.status()["events"] == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_may_read(peer: str) -> None:
    with local_hub(peer) as hub:
        assert hub.get("/api/hub/groups").status_code == 200


def test_this_machine_by_its_own_network_address_may_read() -> None:
    app = create_hub([SITE])
    scope = {"type": "http", "client": ("192.168.1.5", 40000), "server": ("192.168.1.5", 8787)}
    assert app._local_peer(scope)
    assert not app._local_peer({**scope, "client": ("192.168.1.6", 40000)})
    assert app._local_peer({**scope, "client": None})  # a Unix socket


def test_allowed_peers_are_explicit() -> None:
    with local_hub("172.18.0.5", allowed_peers=["172.16.0.0/12"]) as hub:
        assert hub.get("/api/hub/groups").status_code == 200
    with local_hub("172.32.0.5", allowed_peers=["172.16.0.0/12"]) as hub:
        assert hub.get("/api/hub/groups").status_code == 403
    with pytest.raises(ValueError, match="allowed_peers: 'nope'"):
        create_hub([SITE], allowed_peers=["nope"])


def test_over_real_tcp_on_0_0_0_0_the_peer_address_decides() -> None:
    # No traffic leaves loopback: uvicorn takes the peer from X-Forwarded-For when the
    # connection comes from its trusted proxy (127.0.0.1), which is how a reverse proxy
    # on this machine would hand over a remote visitor; from 127.0.0.2 the header is
    # not trusted and the socket's own (loopback) address counts.
    with HubServer(create_hub([SITE]), host="0.0.0.0") as server:
        url = f"http://127.0.0.1:{server.port}"
        remote = {"X-Forwarded-For": "203.0.113.7"}
        with httpx.Client(base_url=url, timeout=5) as direct:
            assert direct.get("/api/hub/groups").status_code == 200
            assert direct.get("/api/hub/groups", headers=remote).status_code == 403
            assert direct.post("/api/hub/reset", json={}, headers=remote).status_code == 403
            assert direct.post("/api/v1/events/server", json=event(8), headers={**SERVER, **remote}).status_code == 200
            events = direct.get("/api/hub/events").json()["events"]
            assert events[0]["peer"] == "203.0.113.7"  # the address the hub records for an event
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=url, timeout=5, transport=other) as second:
            assert second.get("/api/hub/groups", headers=remote).status_code == 200
            second.post("/api/v1/events/server", json=event(9), headers=SERVER).raise_for_status()
            assert second.get("/api/hub/events").json()["events"][0]["peer"] == "127.0.0.2"
    server.app.hub.store.close()
