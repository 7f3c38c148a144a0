from __future__ import annotations

from typing import Any

import pytest

from layersync_middleware._request import parse_cookies, request_context, request_user_data


def scope(
    path: str = "/api/cart/add", headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"host", b"shop.example")],
        "client": ("10.0.0.2", 5555),
        "server": ("10.0.0.1", 443),
        **extra,
    }


def environ(**extra: Any) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "shop.example",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/cart/add",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "10.0.0.2",
        "SERVER_NAME": "x",
        "SERVER_PORT": "443",
        **extra,
    }


def test_asgi_scope() -> None:
    ctx = request_context(
        scope(
            headers=[
                (b"host", b"shop.example"),
                (b"user-agent", b"UA/1"),
                (b"x-forwarded-for", b"1.1.1.1"),
                (b"x-forwarded-for", b"2.2.2.2"),
            ]
        )
    )
    assert ctx.url == "https://shop.example/api/cart/add"
    assert ctx.peer == "10.0.0.2"
    assert ctx.headers["x-forwarded-for"] == ["1.1.1.1", "2.2.2.2"]
    assert ctx.header("user-agent") == "UA/1"


def test_asgi_root_path_is_in_the_url_not_in_the_routing_path() -> None:
    ctx = request_context(scope(path="/shop/api/cart/add", root_path="/shop"))
    assert ctx.path == "/api/cart/add"
    assert ctx.url == "https://shop.example/shop/api/cart/add"


def test_wsgi_environ_script_name_and_query() -> None:
    ctx = request_context(environ(SCRIPT_NAME="/shop", QUERY_STRING="gclid=abc", HTTP_USER_AGENT="UA/2"))
    assert ctx.path == "/api/cart/add"
    assert ctx.url == "https://shop.example/shop/api/cart/add?gclid=abc"
    assert ctx.header("user-agent") == "UA/2"


def test_wsgi_utf8_path_arrives_as_latin1() -> None:
    raw = "/api/cart/café".encode().decode("latin-1")
    ctx = request_context(environ(PATH_INFO=raw))
    assert ctx.path == "/api/cart/café"
    assert ctx.url.endswith("/api/cart/caf%C3%A9")


def test_objects_carrying_a_scope_environ_or_meta() -> None:
    class WithScope:
        scope = scope()

    class WithEnviron:
        environ = environ()

    class WithMeta:
        META = environ(HTTP_HOST="meta.example")
        scheme = "http"

    assert request_context(WithScope()).host == "shop.example"
    assert request_context(WithEnviron()).peer == "10.0.0.2"
    assert request_context(WithMeta()).url == "http://meta.example/api/cart/add"


def test_unknown_request_type() -> None:
    with pytest.raises(TypeError, match="request="):
        request_context(object())


def test_cookies() -> None:
    header = 'a=1; _fbp=fb.1.2.3; _fbc="fb.1.2.abc"; _ga=GA1%2E1; _fbp=second; junk'
    assert parse_cookies(header) == {"_fbp": "fb.1.2.3", "_fbc": "fb.1.2.abc", "_ga": "GA1.1"}
    assert parse_cookies("_fbp=" + "x" * 5000) == {}


def test_user_data_from_request() -> None:
    ctx = request_context(
        scope(
            headers=[
                (b"host", b"shop.example"),
                (b"user-agent", b"Mozilla/5.0"),
                (b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
                (b"cookie", b"_fbp=fb.1.1.1; _gcl_aw=GCL.1.cookie; ttclid=tt1"),
            ]
        )
    )
    data = request_user_data(ctx, 1, "https://shop.example/p?gclid=fromurl&fbclid=IwAR1")
    assert data["client_ip_address"] == "203.0.113.9"
    assert data["user_agent"] == "Mozilla/5.0"
    assert data["fbp"] == "fb.1.1.1"
    assert data["gclid"] == "fromurl"  # the URL parameter wins over the cookie
    assert data["ttclid"] == "tt1"
    assert data["fbc"].startswith("fb.1.") and data["fbc"].endswith(".IwAR1")


def test_page_url_is_a_same_origin_referer() -> None:
    def ctx(ref: bytes) -> Any:
        return request_context(scope(headers=[(b"host", b"shop.example"), (b"referer", ref)]))

    assert ctx(b"https://shop.example/products/a?gclid=1").page_url() == "https://shop.example/products/a?gclid=1"
    assert ctx(b"https://evil.example/x").page_url() == "https://shop.example/api/cart/add"


def test_pairing_headers() -> None:
    ctx = request_context(
        scope(headers=[(b"x-layersync-event-id", b"atc_0123456789abcdef"), (b"X-LayerSync-Event-Name", b"add_to_cart")])
    )
    assert ctx.pairing() == ("atc_0123456789abcdef", "add_to_cart")
    assert request_context(scope()).pairing() is None
