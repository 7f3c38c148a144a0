from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pytest
from helpers import StartResponse, settings
from strategies import SDK_URLS, sdk_headers
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from layersync_middleware import LayerSync, LayerSyncWSGIMiddleware, current_event
from layersync_middleware.testing import MemoryTransport

ATC = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
PUR = {"X-LayerSync-Event-Id": "pur_0123456789abcdef", "X-LayerSync-Event-Name": "purchase"}


@Request.application
def shop(request: Request) -> Response:
    pending = current_event()
    if request.path == "/api/orders/boom":
        raise RuntimeError("the app's own bug")
    if pending is not None and request.args.get("enrich"):
        pending.update(order_id="O-W", value=3.5)
    if pending is not None and request.args.get("cancel"):
        pending.cancel()
    return Response("ok", status=int(request.args.get("status", 200)))


def make(memory: MemoryTransport, app: Any = shop, **kw: Any) -> tuple[LayerSyncWSGIMiddleware, LayerSync]:
    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*", "/api/orders/**"]), transport=memory)
    return LayerSyncWSGIMiddleware(app, client=client, **kw), client


def call(app: Any, path: str, headers: dict[str, str] | None = None, **environ: Any) -> Any:
    c = Client(app)
    c.set_cookie("_fbp", "fb.1.2.3")
    return c.post(path, headers=headers or {}, environ_base={"REMOTE_ADDR": "10.0.0.2", **environ})


def test_paired_event(memory: MemoryTransport) -> None:
    app, _ = make(memory)
    r = call(app, "/api/cart/add", {**ATC, "User-Agent": "UA/1", "X-Forwarded-For": "6.6.6.6"})
    assert r.status_code == 200 and r.get_data() == b"ok"
    [event] = memory.events
    assert event["event_id"] == "atc_0123456789abcdef"
    assert event["user_data"]["client_ip_address"] == "10.0.0.2"  # trust_proxy=0: the forged header is ignored
    assert event["user_data"]["fbp"] == "fb.1.2.3" and event["user_data"]["user_agent"] == "UA/1"


def test_trust_proxy_takes_the_load_balancers_entry(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*"], trust_proxy=1), transport=memory)
    app = LayerSyncWSGIMiddleware(shop, client=client)
    call(app, "/api/cart/add", {**ATC, "X-Forwarded-For": "6.6.6.6, 198.51.100.4"})
    assert memory.events[0]["user_data"]["client_ip_address"] == "198.51.100.4"


def test_nothing_without_match_or_headers(memory: MemoryTransport) -> None:
    app, _ = make(memory)
    call(app, "/elsewhere", ATC)
    call(app, "/api/cart/add")
    assert memory.events == []


def test_forged_and_malformed_headers(memory: MemoryTransport) -> None:
    app, client = make(memory)
    call(app, "/api/cart/add", PUR)
    call(app, "/api/cart/add", {"X-LayerSync-Event-Id": "\u00e9" * 20, "X-LayerSync-Event-Name": "add_to_cart"})
    assert memory.events == []
    assert client.stats().dropped == {"name_not_allowed": 1, "invalid_header": 1}


@pytest.mark.parametrize("status", [400, 409, 500])
def test_failures_send_nothing(memory: MemoryTransport, status: int) -> None:
    app, _ = make(memory)
    assert call(app, f"/api/cart/add?status={status}", ATC).status_code == status
    assert memory.events == []


def test_enrich_and_cancel(memory: MemoryTransport) -> None:
    app, _ = make(memory)
    call(app, "/api/orders?enrich=1", PUR)
    call(app, "/api/cart/add?cancel=1", ATC)
    [event] = memory.events
    assert event["custom_data"] == {"order_id": "O-W", "value": 3.5}


def test_app_exception_propagates(memory: MemoryTransport) -> None:
    app, _ = make(memory)
    with pytest.raises(RuntimeError, match="own bug"):
        call(app, "/api/orders/boom", PUR)
    assert memory.events == []


def test_response_iterable_is_returned_untouched(memory: MemoryTransport) -> None:
    class FileWrapper:
        def __init__(self, f: Any) -> None:
            self.f = f
            self.closed = False

        def __iter__(self) -> Any:
            return iter([self.f.read()])

        def close(self) -> None:
            self.closed = True

    returned: list[Any] = []

    def file_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        body = environ["wsgi.file_wrapper"](io.BytesIO(b"file body"))
        returned.append(body)
        return body  # type: ignore[no-any-return]

    app, _ = make(memory, file_app)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/cart/add",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "10.0.0.2",
        "wsgi.file_wrapper": FileWrapper,
        "HTTP_X_LAYERSYNC_EVENT_ID": ATC["X-LayerSync-Event-Id"],
        "HTTP_X_LAYERSYNC_EVENT_NAME": "add_to_cart",
    }
    start_response = StartResponse()
    result = app(environ, start_response)
    assert result is returned[0]  # identity kept: servers' sendfile/offload still work
    assert start_response.statuses == ["200 OK"] and len(memory.events) == 1


def test_streaming_body_event_is_queued_before_the_body(memory: MemoryTransport) -> None:
    seen: list[int] = []

    def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        yield b"a"
        seen.append(len(memory.events))
        yield b"b"

    app, _ = make(memory, streaming_app)
    assert call(app, "/api/cart/add", ATC).get_data() == b"ab"
    assert seen == [1]


def test_start_response_gets_exc_info_only_when_given(memory: MemoryTransport) -> None:
    def app_with_exc(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            raise ValueError("x")
        except ValueError:
            import sys

            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"err"]

    app, _ = make(memory, app_with_exc)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/cart/add",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "HTTP_X_LAYERSYNC_EVENT_ID": "atc_0123456789abcdef",
        "HTTP_X_LAYERSYNC_EVENT_NAME": "add_to_cart",
    }
    with_exc_info = StartResponse()
    app(environ, with_exc_info)
    assert len(with_exc_info.calls[0]) == 3 and memory.events == []
    environ.pop("layersync.handled")
    without = StartResponse()
    make(memory)[0](environ, without)
    assert len(without.calls[0]) == 2


def test_patterns_match_path_info_not_script_name(memory: MemoryTransport) -> None:
    app, _ = make(memory)
    Client(app).post("/api/cart/add", headers=ATC, base_url="http://localhost/shop")
    assert memory.events[0]["event_source_url"] == "http://localhost/shop/api/cart/add"


def test_installed_twice_sends_once(memory: MemoryTransport) -> None:
    inner, _ = make(memory)
    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*"], timeout_ms=999), transport=memory)
    call(LayerSyncWSGIMiddleware(inner, client=client), "/api/cart/add", ATC)
    assert len(memory.events) == 1


def test_consent(memory: MemoryTransport) -> None:
    app, _ = make(memory, consent=lambda environ: "consent=no" not in environ.get("HTTP_COOKIE", ""))
    c = Client(app)
    c.set_cookie("consent", "no")
    c.post("/api/cart/add", headers=ATC)
    assert memory.events == []


def test_async_hooks_are_refused_by_the_sync_adapter(memory: MemoryTransport) -> None:
    async def consent(environ: Any) -> bool:
        return False

    client = LayerSync(settings(sender="sync", matcher=["/api/cart/*"]), transport=memory)
    with pytest.raises(TypeError, match="consent is an async function"):
        LayerSyncWSGIMiddleware(shop, client=client, consent=consent)


def test_a_hook_returning_an_awaitable_never_counts_as_yes(memory: MemoryTransport) -> None:
    async def later() -> bool:
        return True

    def consent(environ: Any) -> Any:
        return later()  # not an async def, but returns a coroutine: still not a yes

    app, _ = make(memory, consent=consent)
    assert call(app, "/api/cart/add", ATC).status_code == 200
    assert memory.events == []


# -- what the browser SDK stamps pairs by default (issue 20) ------------------------------------
def environ_for(method: str, url: str, headers: dict[str, str], script_name: str = "") -> dict[str, Any]:
    path, _, query = url.partition("?")
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": script_name, "PATH_INFO": path, "QUERY_STRING": query}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return environ


def plain(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


@pytest.mark.parametrize("script_name", ["", "/api"], ids=["root", "mounted"])
def test_every_default_rule_pairs_once_with_no_matcher(memory: MemoryTransport, script_name: str) -> None:
    client = LayerSync(settings(sender="sync"), transport=memory)
    app = LayerSyncWSGIMiddleware(plain, client=client)
    for n, (url, name) in enumerate(SDK_URLS):
        for _ in range(2):  # the SDK re-sends a stale id: forwarded once
            assert list(app(environ_for("POST", url, sdk_headers(name, n), script_name), StartResponse())) == [b"ok"]
    assert [e["event_name"] for e in memory.events] == [name for _, name in SDK_URLS]
    assert client.stats().dropped == {}


def test_read_only_repeated_and_unmatched_requests_are_counted(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync"), transport=memory)
    app = LayerSyncWSGIMiddleware(plain, client=client)
    atc = sdk_headers("add_to_cart")
    list(app(environ_for("GET", "/cart/items", atc), StartResponse()))
    list(app(environ_for("HEAD", "/api/cart", atc), StartResponse()))
    # gunicorn and the other servers join a repeated header with a comma
    repeated = {**atc, "X-LayerSync-Event-Id": ",".join([atc["X-LayerSync-Event-Id"]] * 60_000)}
    list(app(environ_for("POST", "/cart/add", repeated), StartResponse()))
    list(app(environ_for("POST", "/products/1", atc), StartResponse()))
    assert memory.events == []
    assert client.stats().dropped == {"read_only_method": 2, "repeated_header": 1, "unmatched": 1}


def test_a_mounted_app_pairs_the_sdks_name_for_script_name_and_path(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync", matcher=["/**"]), transport=memory)
    app = LayerSyncWSGIMiddleware(plain, client=client)
    list(app(environ_for("POST", "/cart", sdk_headers("add_to_cart"), "/api"), StartResponse()))
    assert [e["event_name"] for e in memory.events] == ["add_to_cart"] and client.stats().dropped == {}


def test_consent_must_answer_true(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync"), transport=memory)
    answers: list[Any] = ["false", 0, None, True]
    for answer in answers:
        app = LayerSyncWSGIMiddleware(plain, client=client, consent=lambda environ, a=answer: a)  # type: ignore[misc]
        list(app(environ_for("POST", "/cart/add", sdk_headers("add_to_cart")), StartResponse()))
    assert len(memory.events) == 1 and client.stats().dropped == {"invalid_consent": 3}


def test_a_status_line_without_a_number_counts_as_a_failure_and_passes_through(memory: MemoryTransport) -> None:
    def odd(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("OK", [("Content-Type", "text/plain")])  # a broken app: no status code
        return [b"ok"]

    app, client = make(memory, odd)
    started = StartResponse()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/cart/add",
        "SERVER_NAME": "shop.example",
        "SERVER_PORT": "443",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "HTTP_X_LAYERSYNC_EVENT_ID": ATC["X-LayerSync-Event-Id"],
        "HTTP_X_LAYERSYNC_EVENT_NAME": ATC["X-LayerSync-Event-Name"],
    }
    assert b"".join(app(environ, started)) == b"ok" and started.statuses == ["OK"]  # untouched
    assert client.flush(1) == 0 and memory.events == []  # read as a 500: not a conversion
