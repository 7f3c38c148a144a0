from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import settings
from servers import ROOT, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from strategies import SDK_URLS, sdk_headers

from layersync_middleware import ConfigurationError, LayerSync, LayerSyncMiddleware, current_event
from layersync_middleware._pairing import REPEATED, asgi_pairing
from layersync_middleware.testing import MemoryTransport

ATC = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
PUR = {"X-LayerSync-Event-Id": "pur_0123456789abcdef", "X-LayerSync-Event-Name": "purchase"}
MATCHER = ["/api/cart/*", "/api/orders/**"]


async def cart(request: Request) -> JSONResponse:
    status = int(request.query_params.get("status", 200))
    pending = current_event()
    if pending is not None and request.query_params.get("enrich"):
        pending.update(value=12.5, currency="USD", items=[{"item_id": "SKU-A", "price": 12.5}])
        pending.identify(email="Ada@Example.com")
    if pending is not None and request.query_params.get("cancel"):
        pending.cancel()
    return JSONResponse({"ok": status < 400}, status_code=status)


def sync_cart(request: Request) -> JSONResponse:  # a plain def handler runs in a thread
    pending = current_event()
    assert pending is not None
    pending.update(order_id="O-SYNC")
    return JSONResponse({"ok": True})


async def orders(request: Request) -> JSONResponse:
    pending = current_event()
    if pending is not None:
        pending.update(order_id="O-1", value=99.0)
    return JSONResponse({"order_id": "O-1"}, status_code=201)


async def boom(request: Request) -> JSONResponse:  # on an order route, so the name is allowed
    raise RuntimeError("the app's own bug")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def make_app(memory: MemoryTransport, state: dict[str, Any] | None = None, **kwargs: Any) -> tuple[Any, LayerSync]:
    client = LayerSync(settings(sender="sync", matcher=MATCHER), transport=memory)

    async def stream(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first "
            # The paired event is already queued while the body is still streaming.
            assert state is not None
            state["seen_while_streaming"] = len(memory.events)
            yield b"second"

        return StreamingResponse(body())

    routes = [
        Route("/api/cart/add", cart, methods=["POST"]),
        Route("/api/cart/sync", sync_cart, methods=["POST"]),
        Route("/api/orders", orders, methods=["POST"]),
        Route("/api/cart/stream", stream, methods=["POST"]),
        Route("/api/orders/boom", boom, methods=["POST"]),
        Route("/elsewhere", cart, methods=["POST"]),
        WebSocketRoute("/ws", ws),
    ]
    app = Starlette(routes=routes)
    return LayerSyncMiddleware(app, client=client, **kwargs), client


@pytest.fixture
def app(memory: MemoryTransport) -> Any:
    return make_app(memory)[0]


def post(app: Any, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    with TestClient(app, client=("203.0.113.5", 5000), cookies={"_fbp": "fb.1.1.1", "_fbc": "fb.1.1.abc"}) as c:
        return c.post(path, headers=headers or {}, **kw)


def test_matched_request_with_headers_sends_one_paired_event(app: Any, memory: MemoryTransport) -> None:
    r = post(app, "/api/cart/add", {**ATC, "User-Agent": "Mozilla/5.0 Shopper", "Referer": "http://testserver/p/a"})
    assert r.status_code == 200
    [event] = memory.events
    assert (event["event_id"], event["event_name"]) == ("atc_0123456789abcdef", "add_to_cart")
    ud = event["user_data"]
    assert ud["client_ip_address"] == "203.0.113.5" and ud["user_agent"] == "Mozilla/5.0 Shopper"
    assert ud["fbp"] == "fb.1.1.1" and ud["fbc"] == "fb.1.1.abc"
    assert event["event_source_url"] == "http://testserver/p/a"  # the page, like the browser event


def test_unmatched_path_or_missing_headers_send_nothing(app: Any, memory: MemoryTransport) -> None:
    assert post(app, "/elsewhere", ATC).status_code == 200
    assert post(app, "/api/cart/add").status_code == 200
    assert memory.events == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-LayerSync-Event-Id": "atc_0123456789abcdef"},
        {"X-LayerSync-Event-Id": "a" * 300, "X-LayerSync-Event-Name": "add_to_cart"},
        {"X-LayerSync-Event-Id": "atc_01234567<script>", "X-LayerSync-Event-Name": "add_to_cart"},
        {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "Add To Cart"},
        {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "x" * 100},
    ],
)
def test_malformed_headers_are_refused_and_the_response_is_untouched(
    memory: MemoryTransport, headers: dict[str, str]
) -> None:
    app, _client = make_app(memory)
    r = post(app, "/api/cart/add", headers)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert memory.events == []


def test_forged_name_on_a_cart_route_is_refused(memory: MemoryTransport) -> None:
    app, client = make_app(memory)
    post(app, "/api/cart/add", PUR)
    assert memory.events == [] and client.stats().dropped == {"name_not_allowed": 1}
    post(app, "/api/orders", PUR)
    assert [e["event_name"] for e in memory.events] == ["purchase"]


def test_names_per_pattern_override_the_default(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync", matcher={"/api/cart/*": ["add_to_wishlist"]}), transport=memory)
    app = LayerSyncMiddleware(Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])]), client=client)
    post(app, "/api/cart/add", ATC)
    post(
        app,
        "/api/cart/add",
        {"X-LayerSync-Event-Id": "wl_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_wishlist"},
    )
    assert [e["event_name"] for e in memory.events] == ["add_to_wishlist"]


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
def test_failed_responses_send_nothing(app: Any, memory: MemoryTransport, status: int) -> None:
    assert post(app, f"/api/cart/add?status={status}", ATC).status_code == status
    assert memory.events == []


def test_success_is_configurable(memory: MemoryTransport) -> None:
    app, _ = make_app(memory, is_success=lambda status: status == 404)
    post(app, "/api/cart/add?status=200", ATC)
    assert memory.events == []
    post(app, "/api/cart/add?status=404", ATC)
    assert len(memory.events) == 1


def test_app_exception_propagates_and_sends_nothing(app: Any, memory: MemoryTransport) -> None:
    with TestClient(app) as c, pytest.raises(RuntimeError, match="own bug"):
        c.post("/api/orders/boom", headers=PUR)
    assert memory.events == []


def test_handler_enrichment(app: Any, memory: MemoryTransport) -> None:
    post(app, "/api/cart/add?enrich=1", ATC)
    [event] = memory.events
    assert event["custom_data"]["value"] == 12.5 and event["custom_data"]["content_ids"] == ["SKU-A"]
    assert len(event["user_data"]["em"]) == 64


def test_sync_handler_enrichment_through_the_threadpool(memory: MemoryTransport) -> None:
    app, _ = make_app(memory)
    post(app, "/api/cart/sync", {**ATC})
    assert memory.events[0]["custom_data"]["order_id"] == "O-SYNC"


def test_handler_cancel(app: Any, memory: MemoryTransport) -> None:
    post(app, "/api/cart/add?cancel=1", ATC)
    assert memory.events == []


def test_current_event_is_none_outside_a_paired_request(app: Any) -> None:
    assert current_event() is None


def test_streaming_response_event_is_queued_at_response_start(memory: MemoryTransport) -> None:
    state: dict[str, Any] = {}
    app, _ = make_app(memory, state)
    with TestClient(app) as c:
        r = c.post("/api/cart/stream", headers=ATC)
    assert r.text == "first second"
    assert state["seen_while_streaming"] == 1


def test_websocket_passes_through(app: Any) -> None:
    with TestClient(app) as c, c.websocket_connect("/ws", headers=ATC) as socket:
        assert socket.receive_text() == "hi"


def test_lifespan_passes_through_and_drains_the_sender(memory: MemoryTransport) -> None:
    events: list[str] = []
    client = LayerSync(settings(matcher=MATCHER), transport=memory)  # a background thread sender

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("startup")
        yield
        client.track("purchase", {"order_id": "from-shutdown-handler"})
        events.append("shutdown")

    inner = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])], lifespan=lifespan)
    client._worker.wake = lambda: None  # type: ignore[method-assign]  # nothing leaves until the drain
    with TestClient(LayerSyncMiddleware(inner, client=client)) as c:
        c.post("/api/cart/add", headers=ATC)
        assert memory.events == []
    assert events == ["startup", "shutdown"]
    assert sorted(e["event_name"] for e in memory.events) == ["add_to_cart", "purchase"]


def test_installed_twice_sends_once(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync", matcher=MATCHER), transport=memory)
    other = LayerSync(settings(sender="sync", matcher=MATCHER, timeout_ms=1234), transport=memory)
    inner = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])])
    app = LayerSyncMiddleware(LayerSyncMiddleware(inner, client=other), client=client)
    post(app, "/api/cart/add", ATC)
    assert len(memory.events) == 1


def test_consent_hook(memory: MemoryTransport) -> None:
    def consent(scope: Any) -> bool:
        return b"consent=no" not in dict(scope["headers"]).get(b"cookie", b"")

    app, _ = make_app(memory, consent=consent)
    with TestClient(app) as c:
        c.post("/api/cart/add", headers={**ATC, "Cookie": "consent=no"})
        assert memory.events == []
        c.post("/api/cart/add", headers={**ATC, "Cookie": "consent=yes"})
    assert len(memory.events) == 1


def test_a_failing_consent_hook_never_breaks_the_request(memory: MemoryTransport) -> None:
    def consent(scope: Any) -> bool:
        raise ValueError("oops")

    app, client = make_app(memory, consent=consent)
    assert post(app, "/api/cart/add", ATC).status_code == 200
    assert memory.events == [] and client.stats().dropped == {"internal_error": 1}


def test_internal_errors_never_break_the_request(memory: MemoryTransport) -> None:
    app, client = make_app(memory)

    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug in tracking")

    client._track_paired = broken  # type: ignore[method-assign]
    r = post(app, "/api/cart/add", ATC)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert client.stats().dropped == {"internal_error": 1}


def test_patterns_match_the_path_without_root_path(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*"]), transport=memory)
    shop = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])])
    app = Starlette(routes=[Mount("/shop", app=LayerSyncMiddleware(shop, client=client))])
    with TestClient(app) as c:
        assert c.post("/shop/api/cart/add", headers=ATC).status_code == 200
    [event] = memory.events
    assert event["event_source_url"] == "http://testserver/shop/api/cart/add"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSYNC_SITE_ID", "site_env")
    monkeypatch.setenv("LAYERSYNC_SECRET", "sk_env_key")
    mw = LayerSyncMiddleware(Starlette(), matcher=["/api/cart/*"], api_url="http://127.0.0.1:9")
    assert mw.client.settings.site_id == "site_env"
    assert mw.client is LayerSyncMiddleware(Starlette(), matcher=["/api/cart/*"], api_url="http://127.0.0.1:9").client
    monkeypatch.setenv("LAYERSYNC_SECRET", "pk_wrong")
    with pytest.raises(ConfigurationError, match="LAYERSYNC_SECRET: is a publishable key"):
        LayerSyncMiddleware(Starlette(), matcher=["/api/cart/*"], strict=True)


def test_bad_settings_disable_tracking_and_never_break_the_app(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # add_middleware builds the stack lazily, inside the lifespan or the first request:
    # raising there would answer 500 on every route. Tracking turns off, loudly, instead.
    monkeypatch.delenv("LAYERSYNC_SITE_ID", raising=False)
    monkeypatch.setenv("LAYERSYNC_SECRET", "pk_wrong")
    app = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])])
    app.add_middleware(LayerSyncMiddleware, matcher=["/api/cart/*"])
    with TestClient(app) as c:
        assert c.post("/api/cart/add", headers=ATC).status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("LAYERSYNC_SITE_ID" in m and "tracking is disabled" in m for m in errors), errors


def test_fastapi_add_middleware(memory: MemoryTransport) -> None:
    from fastapi import FastAPI

    client = LayerSync(settings(sender="sync", matcher=["/api/orders"]), transport=memory)
    api = FastAPI()

    @api.post("/api/orders", status_code=201)
    async def create_order() -> dict[str, str]:
        pending = current_event()
        assert pending is not None
        pending.update(order_id="O-FAST", value=5.0)
        return {"order_id": "O-FAST"}

    api.add_middleware(LayerSyncMiddleware, client=client)
    with TestClient(api) as c:
        assert c.post("/api/orders", headers=PUR).status_code == 201
    assert memory.events[0]["custom_data"]["order_id"] == "O-FAST"


def test_no_framework_needed_for_a_raw_asgi_app(memory: MemoryTransport) -> None:
    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*"]), transport=memory)
    mw = LayerSyncMiddleware(raw_app, client=client)
    scope = {
        "type": "http",
        "path": "/api/cart/add",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in ATC.items()],
        "client": ("1.2.3.4", 1),
        "server": ("x", 80),
        "method": "POST",
    }
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 204 and len(memory.events) == 1


def test_capture_events_reaches_a_client_built_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from layersync_middleware.testing import capture_events

    monkeypatch.setenv("LAYERSYNC_SITE_ID", "site_env_capture")
    monkeypatch.setenv("LAYERSYNC_SECRET", "sk_env_capture")
    app = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])])
    app.add_middleware(LayerSyncMiddleware, matcher=["/api/cart/*"], api_url="http://127.0.0.1:9")
    with capture_events() as captured, TestClient(app) as c:
        assert c.post("/api/cart/add", headers=ATC).status_code == 200
        captured.wait_for(1)
    [event] = captured.events
    assert event["site_id"] == "site_env_capture" and event["event_name"] == "add_to_cart"


def test_async_hooks_are_awaited(memory: MemoryTransport) -> None:
    # A coroutine object is truthy: taken for a yes, consent was bypassed.
    async def consent(scope: Any) -> bool:
        host: str = scope["client"][0]
        return host != "203.0.113.5"

    async def is_success(status: int) -> bool:
        return status == 200

    client = LayerSync(settings(sender="sync", matcher=MATCHER), transport=memory)
    inner = Starlette(routes=[Route("/api/cart/add", cart, methods=["POST"])])
    post(LayerSyncMiddleware(inner, client=client, consent=consent), "/api/cart/add", ATC)
    assert memory.events == []  # consent said no
    post(LayerSyncMiddleware(inner, client=client, is_success=is_success), "/api/cart/add?status=201", ATC)
    assert memory.events == []  # is_success said no to a 201
    post(LayerSyncMiddleware(inner, client=client, is_success=is_success), "/api/cart/add", ATC)
    assert [e["event_name"] for e in memory.events] == ["add_to_cart"]


# -- what the browser SDK stamps pairs by default (issue 20) ------------------------------------
def raw_call(client: LayerSync, method: str, url: str, headers: dict[str, str], root: str = "") -> int:
    """One request through the middleware to a bare ASGI app; the status it answered."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": root + path,
        "root_path": root,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(LayerSyncMiddleware(app, client=client)(scope, receive, send))
    return int(sent[0]["status"])


def sdk_client(memory: MemoryTransport, **options: Any) -> LayerSync:
    return LayerSync(settings(sender="sync", **options), transport=memory)


@pytest.mark.parametrize("root", ["", "/api"], ids=["root", "mounted"])
def test_every_default_rule_pairs_once_with_no_matcher(memory: MemoryTransport, root: str) -> None:
    client = sdk_client(memory)
    for n, (url, name) in enumerate(SDK_URLS):
        assert raw_call(client, "POST", url, sdk_headers(name, n), root) == 200
        assert raw_call(client, "POST", url, sdk_headers(name, n), root) == 200  # the SDK re-sends a stale id
    assert [(e["event_name"], e["event_id"]) for e in memory.events] == [
        (name, sdk_headers(name, n)["X-LayerSync-Event-Id"]) for n, (_, name) in enumerate(SDK_URLS)
    ]
    assert client.stats().dropped == {} and client.stats().duplicates == len(SDK_URLS)


def test_a_mounted_app_accepts_the_sdks_name_for_the_full_url(memory: MemoryTransport) -> None:
    # Mounted at /api, the app routes on /cart; the browser called /api/cart (issue 20, B1).
    client = sdk_client(memory, matcher=["/**"])
    for n, (path, name) in enumerate(
        [("/cart", "add_to_cart"), ("/checkout", "begin_checkout"), ("/order-status", "purchase")]
    ):
        raw_call(client, "POST", path, sdk_headers(name, n), root="/api")
    assert [e["event_name"] for e in memory.events] == ["add_to_cart", "begin_checkout", "purchase"]
    assert client.stats().dropped == {}


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_read_only_methods_do_not_pair_unless_asked(memory: MemoryTransport, method: str) -> None:
    client = sdk_client(memory)
    assert raw_call(client, method, "/cart/items", sdk_headers("add_to_cart")) == 200
    assert memory.events == [] and client.stats().dropped == {"read_only_method": 1}
    asked = sdk_client(memory, pair_read_only=True)
    raw_call(asked, method, "/cart/items", sdk_headers("add_to_cart"))
    assert [e["event_name"] for e in memory.events] == ["add_to_cart"]


def test_a_get_after_a_cart_post_pairs_nothing(memory: MemoryTransport) -> None:
    # After a cart POST the SDK fires its own add_to_cart; a GET that carries its id
    # would have paired it too: two paired add-to-carts for one click (issue 20, 4.2).
    client = sdk_client(memory)
    raw_call(client, "POST", "/cart/add", sdk_headers("add_to_cart", 1))
    raw_call(client, "GET", "/cart/items?x=1", sdk_headers("add_to_cart", 2))
    assert [e["event_id"] for e in memory.events] == [sdk_headers("add_to_cart", 1)["X-LayerSync-Event-Id"]]


def test_a_stamped_request_that_does_not_pair_is_counted_and_logged_with_what_to_change(
    memory: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "layersync")
    client = sdk_client(memory, matcher=["/api/cart/*"], sdk_rules=False)
    raw_call(client, "POST", "/cart/add", sdk_headers("add_to_cart"))  # the README's old example missed it
    raw_call(client, "GET", "/api/cart/add", sdk_headers("add_to_cart"))
    raw_call(client, "POST", "/api/cart/add?next=/orders", sdk_headers("add_to_cart"))  # the SDK says purchase
    assert memory.events == []
    assert client.stats().dropped == {"unmatched": 1, "read_only_method": 1, "name_not_allowed": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert any("POST /cart/add" in m and "add it to the matcher setting" in m for m in lines), lines
    assert any("GET /api/cart/add" in m and "set pair_read_only" in m for m in lines), lines
    assert any("the pattern /api/cart/* allows purchase here" in m for m in lines), lines
    for m in lines:  # English, not Python: no "allows None", no "a add_to_cart"
        assert "None" not in m and " a add_to_cart" not in m and " a purchase" not in m, m


def test_repeated_pairing_headers_are_refused_without_joining(memory: MemoryTransport) -> None:
    client = sdk_client(memory)
    lines = [("x-layersync-event-id", f"atc_{n:016x}") for n in range(50_000)]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/cart/add",
        "headers": [(k.encode(), v.encode()) for k, v in [*lines, ("x-layersync-event-name", "add_to_cart")]],
    }
    started = time.perf_counter()
    assert asgi_pairing(scope["headers"])[:2] == REPEATED  # type: ignore[index]
    assert time.perf_counter() - started < 0.5  # joining them was quadratic: seconds
    raw_call(client, "POST", "/cart/add", {**sdk_headers("add_to_cart"), "x-layersync-event-name": "add_to_cart"})
    assert raw_call(client, "POST", "/cart/add", sdk_headers("add_to_cart")) == 200
    assert len(memory.events) == 1


@pytest.mark.parametrize("answer", ["false", "0", "no", 1, None, {"ok": True}])
def test_only_true_consents(memory: MemoryTransport, answer: object, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "layersync")
    client = sdk_client(memory)
    consent: Any = lambda request: answer  # noqa: E731  (a hook typed bool, answering otherwise)
    app = LayerSyncMiddleware(
        Starlette(routes=[Route("/cart/add", cart, methods=["POST"])]), client=client, consent=consent
    )
    for _ in range(3):
        assert post(app, "/cart/add", ATC).status_code == 200
    assert memory.events == [] and client.stats().dropped == {"invalid_consent": 3}
    [line] = [r.getMessage() for r in caplog.records if "consent returned" in r.getMessage()]  # logged once
    assert f"consent returned {type(answer).__name__}, not True or False" in line
    yes = LayerSyncMiddleware(
        Starlette(routes=[Route("/cart/add", cart, methods=["POST"])]), client=client, consent=lambda r: True
    )
    post(yes, "/cart/add", ATC)
    assert len(memory.events) == 1


def flood(url: str, path: str, lines: int) -> tuple[float, bytes]:
    """One request with ``lines`` X-LayerSync-Event-Id lines, over a raw socket (no
    client library refuses or merges them); the seconds until the answer and its status line."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n"
    head += "X-LayerSync-Event-Id: atc_0123456789abcdef\r\n" * lines + "X-LayerSync-Event-Name: add_to_cart\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return time.perf_counter() - started, answer.split(b"\r\n", 1)[0]


@pytest.mark.extras
def test_a_header_flood_costs_under_uvicorn_what_it_costs_without_the_middleware() -> None:
    # Issue 22.1: 60,000 id lines froze a uvicorn + httptools worker for 13.6 s (0.08 s
    # without the middleware), joined one by one. Refused now, in one linear scan.
    import httptools  # noqa: F401  (what uvicorn's "auto" picks: it parses a flood this size)

    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "LAYERSYNC_SITE_ID": "site_test",
        "LAYERSYNC_SECRET": "sk_test_secret_key",
        "LAYERSYNC_API_URL": "http://127.0.0.1:9",  # nothing is sent
    }
    with serve("uvicorn", "e2e.sdk_apps:raw", env) as url:
        bare = min(flood(url, "/bare/cart/add", 60_000)[0] for _ in range(2))
        timed = [flood(url, "/cart/add", 60_000) for _ in range(2)]
        stats = httpx.get(url + "/_stats", timeout=5).json()
    assert all(status == b"HTTP/1.1 200 OK" for _, status in timed)
    assert min(t for t, _ in timed) < 2 * bare + 0.2, (bare, timed)
    assert stats["dropped"] == {"repeated_header": 2} and stats["sent"] == 0
