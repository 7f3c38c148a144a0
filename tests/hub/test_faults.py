"""Every fault the lead's fault suite relies on, over real HTTP against uvicorn: down,
hang, drip (status line included), 500, 429 with Retry-After, reset, drop, flapping."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from layersync_middleware.hub import Faults, HubApp, HubServer, HubSite, create_hub

SITE = HubSite("site_f", "pk_f_pub", "sk_f_secret")
SERVER = {"Authorization": "Bearer sk_f_secret", "X-LayerSync-Site-Id": "site_f"}
BROWSER = {"X-LayerSync-Api-Key": "pk_f_pub", "X-LayerSync-Site-Id": "site_f"}
_ids = iter(range(1, 1_000_000))


def event(name: str = "purchase") -> dict[str, Any]:
    return {"site_id": "site_f", "event_id": f"ev_{next(_ids):016x}", "event_name": name, "event_time": 1}


@pytest.fixture
def hub_app() -> HubApp:
    return create_hub([SITE])


@pytest.fixture
def server(hub_app: HubApp) -> Iterator[HubServer]:
    with HubServer(hub_app) as server:
        yield server


@pytest.fixture
def http(server: HubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def set_faults(http: httpx.Client, **faults: Any) -> None:
    http.post("/api/hub/faults", json=faults).raise_for_status()


def post(http: httpx.Client, **options: Any) -> httpx.Response:
    return http.post("/api/v1/events/server", json=event(), headers=SERVER, **options)


def stored(http: httpx.Client) -> int:
    return len(http.get("/api/hub/events").json()["events"])


def test_500_and_429_with_retry_after(http: httpx.Client) -> None:
    set_faults(http, mode="500")
    assert post(http).status_code == 500
    set_faults(http, mode="429", retry_after=7)
    r = post(http)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert stored(http) == 0


def test_flapping_fails_every_other_request(http: httpx.Client) -> None:
    set_faults(http, mode="500", every=2)
    assert [post(http).status_code for _ in range(5)] == [500, 200, 500, 200, 500]
    assert stored(http) == 2 and http.get("/api/hub/faults").json()["hits"] == 3


def test_count_then_healthy_and_target(http: httpx.Client) -> None:
    set_faults(http, mode="429", count=2)
    assert [post(http).status_code for _ in range(3)] == [429, 429, 200]
    set_faults(http, mode="500", target="browser")
    assert post(http).status_code == 200
    browser = http.post("/api/v1/events/browser", json=event(), headers={**BROWSER, "Origin": "http://shop.example"})
    # The browser SDK must see the 500 itself, not a CORS failure.
    assert browser.status_code == 500 and browser.headers["access-control-allow-origin"] == "*"


def test_hang_answers_nothing_until_its_limit(http: httpx.Client, server: HubServer) -> None:
    set_faults(http, mode="hang", hang_seconds=1)
    with pytest.raises(httpx.ReadTimeout):
        post(http, timeout=0.3)
    started = time.monotonic()
    r = post(http, timeout=5)
    assert r.status_code == 503 and 0.5 < time.monotonic() - started < 3
    assert stored(http) == 0


def test_stopping_the_server_releases_a_hang(hub_app: HubApp) -> None:
    server = HubServer(hub_app).start()
    httpx.post(server.url + "/api/hub/faults", json={"mode": "hang", "hang_seconds": 600}).raise_for_status()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/api/v1/events/server", json=event(), headers=SERVER, timeout=0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5


def test_drip_writes_status_line_and_headers_byte_by_byte(server: HubServer, http: httpx.Client) -> None:
    set_faults(http, mode="drip", drip_ms=100)
    body = b'{"site_id":"site_f","event_id":"pur_drip","event_name":"purchase","event_time":1}'
    head = b"POST /api/v1/events/server HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    auth = b"Authorization: Bearer sk_f_secret\r\nX-LayerSync-Site-Id: site_f\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + auth + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)  # the scenario: how much of the answer drips out in 0.5 s
        so_far = sock.recv(1000)
    # About 5 bytes in 0.5 s: the status line itself is still arriving (whole, it is 17).
    assert 0 < len(so_far) < 17 and b"HTTP/1.1 200 OK\r\n".startswith(so_far)


def test_drip_never_trips_a_read_timeout_and_stores_the_event(http: httpx.Client) -> None:
    set_faults(http, mode="drip", drip_ms=10)
    started = time.monotonic()
    r = post(http, timeout=0.5)  # per read; the whole answer takes longer than that
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert time.monotonic() - started > 1.0
    assert stored(http) == 1


def test_reset_is_a_tcp_reset(http: httpx.Client) -> None:
    set_faults(http, mode="reset")
    with pytest.raises(httpx.ReadError) as caught:
        post(http)
    assert "reset by peer" in str(caught.value)  # ECONNRESET, not an orderly close
    set_faults(http, mode=None)
    assert post(http).status_code == 200 and stored(http) == 1


def test_drop_closes_mid_response(http: httpx.Client) -> None:
    set_faults(http, mode="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        post(http)
    assert stored(http) == 0


def test_down_then_up_on_the_same_port_with_the_same_data(hub_app: HubApp) -> None:
    first = HubServer(hub_app).start()
    url, port = first.url, first.port
    assert httpx.post(url + "/api/v1/events/server", json=event(), headers=SERVER).status_code == 200
    first.stop()
    with pytest.raises(httpx.ConnectError):  # connection refused
        httpx.post(url + "/api/v1/events/server", json=event(), headers=SERVER, timeout=2)
    with HubServer(hub_app, port=port) as again:
        assert again.url == url
        assert httpx.post(url + "/api/v1/events/server", json=event(), headers=SERVER).status_code == 200
        assert len(httpx.get(url + "/api/hub/events").json()["events"]) == 2


def test_faults_given_at_creation() -> None:
    with HubServer(create_hub([SITE], faults=Faults(mode="500", count=1))) as server:
        codes = [httpx.post(server.url + "/api/v1/events/server", json=event(), headers=SERVER).status_code]
        codes.append(httpx.post(server.url + "/api/v1/events/server", json=event(), headers=SERVER).status_code)
    assert codes == [500, 200]
