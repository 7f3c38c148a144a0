from __future__ import annotations

import logging
import random
from typing import Any
from urllib.parse import parse_qs

import pytest

from layersync_middleware import LayerSync, Settings, _request
from layersync_middleware._pairing import PendingEvent
from layersync_middleware._request import (
    attribution_url,
    parse_cookies,
    query_params,
    request_context,
    request_user_data,
    warn_untrusted_forwarded,
)


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


# -- issue 22.9: what leaves memory is what the event needs ------------------------------------------
PAGE = (
    "https://shop.example/checkout/done?email=ada%40example.com&utm_source=news&token=s3cr3t"
    "&UTM_Campaign=x%20y&fbclid=IwAR1&gclid=G1&msclkid=M1&reset=1&wbraid=W&gbraid=B&ttclid=T#access_token=zz"
)


def test_the_page_url_keeps_only_attribution_parameters() -> None:
    kept = Settings.disabled().kept_query_params
    assert attribution_url(PAGE, kept) == (
        "https://shop.example/checkout/done?utm_source=news&UTM_Campaign=x%20y&fbclid=IwAR1&gclid=G1"
        "&msclkid=M1&wbraid=W&gbraid=B&ttclid=T"
    )
    assert attribution_url("https://shop.example/a?email=a%40b.c&x", kept) == "https://shop.example/a"
    assert (
        attribution_url(PAGE, ("ref", "utm_*"))
        == "https://shop.example/checkout/done?utm_source=news&UTM_Campaign=x%20y"
    )
    assert attribution_url(PAGE, ()) == "https://shop.example/checkout/done"


def test_an_event_from_a_request_carries_the_page_without_its_secrets(sync_client: LayerSync, memory: Any) -> None:
    headers = [(b"host", b"shop.example"), (b"referer", PAGE.encode())]
    request = scope(headers=headers, query_string=b"session=abc&utm_id=9&gclid=G2")
    sync_client.track("purchase", request=request)  # the request's own URL
    sync_client._track_paired(PendingEvent("pur_0123456789abcdef", "purchase"), request)  # the page's
    assert sync_client.flush(2) == 0
    direct, paired = memory.events
    assert direct["event_source_url"] == "https://shop.example/api/cart/add?utm_id=9&gclid=G2"
    assert paired["event_source_url"] == attribution_url(PAGE, Settings.disabled().kept_query_params)
    assert (direct["user_data"]["gclid"], paired["user_data"]["gclid"]) == ("G2", "G1")  # read from the whole URL
    for secret in ("s3cr3t", "ada", "session", "reset", "access_token"):
        assert secret not in str(memory.events)


@pytest.mark.parametrize(
    "source",
    [
        lambda: Settings.from_env({"LAYERSYNC_KEPT_QUERY_PARAMS": "utm_*, ref", "LAYERSYNC_ENABLED": "0"}),
        lambda: Settings.from_mapping(
            {"kept_query_params": ["utm_*", "ref"], "enabled": False}, spell=lambda k: f"LAYERSYNC[{k!r}]"
        ),
        lambda: Settings(enabled=False, kept_query_params="utm_*,ref"),
    ],
    ids=["env-and-flask", "django", "code"],
)
def test_the_kept_parameters_are_a_setting(source: Any) -> None:
    assert source().kept_query_params == ("utm_*", "ref")


def test_a_bad_kept_parameter_names_the_setting_as_spelled() -> None:
    with pytest.raises(ValueError, match="LAYERSYNC_KEPT_QUERY_PARAMS: must be query parameter names"):
        Settings.from_env({"LAYERSYNC_KEPT_QUERY_PARAMS": "utm_*, a=b", "LAYERSYNC_ENABLED": "0"})
    assert Settings(enabled=False, kept_query_params="none").kept_query_params == ()


def test_pairing_headers() -> None:
    ctx = request_context(
        scope(headers=[(b"x-layersync-event-id", b"atc_0123456789abcdef"), (b"X-LayerSync-Event-Name", b"add_to_cart")])
    )
    assert ctx.pairing() == ("atc_0123456789abcdef", "add_to_cart")
    assert request_context(scope()).pairing() is None


@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/shop/api/cart/add", "/shop", "/api/cart/add"),
        ("/shop", "/shop", "/"),
        ("/shopping/api/cart/add", "/shop", "/shopping/api/cart/add"),  # a prefix, not the mount
        ("/api/cart/add", "/shop", "/api/cart/add"),  # servers that keep root_path out of path
    ],
)
def test_routing_path_drops_the_mount_like_starlette(path: str, root: str, route: str) -> None:
    assert request_context(scope(path=path, root_path=root)).path == route


def test_no_host_and_a_port_that_is_no_number() -> None:
    # Werkzeug's dev server on a unix socket: SERVER_PORT is a character of the socket path.
    env = environ(SERVER_NAME="l", SERVER_PORT="s")
    del env["HTTP_HOST"]
    assert request_context(env).url == "https://l/api/cart/add"
    env.update(SERVER_NAME="shop.example", SERVER_PORT="8443")
    assert request_context(env).url == "https://shop.example:8443/api/cart/add"


def test_server_address_that_is_no_host() -> None:
    no_host = [(b"user-agent", b"UA")]
    assert request_context(scope(headers=no_host, server=("/run/app.sock", None))).host == "localhost"
    assert request_context(scope(headers=no_host, server=("::1", 8000))).host == "[::1]:8000"
    assert request_context(scope(headers=no_host, server=("10.0.0.1", 443))).host == "10.0.0.1"


def test_click_ids_survive_a_query_with_many_fields() -> None:
    # parse_qs(max_num_fields=50) raised beyond 50 fields, and the event was refused as invalid.
    ctx = request_context(scope())
    page = "https://shop.example/shoes?" + "&".join(f"f{i}=v{i}" for i in range(60)) + "&gclid=abc123"
    assert request_user_data(ctx, 0, page)["gclid"] == "abc123"
    far = "https://shop.example/s?" + "&".join(f"f{i}=v" for i in range(10_000)) + "&gclid=late"
    assert "gclid" not in request_user_data(ctx, 0, far)  # read from the first fields only


@pytest.mark.parametrize(
    "query",
    ["gclid=a&gclid=b", "gclid=&gclid=b", "gclid", "g%63lid=x+y%21", "a=1&ScCid=s&li_fat_id=l", "&&=&gclid=%zz"],
)
def test_query_params_read_like_parse_qs(query: str) -> None:
    expected = {k: v[0] for k, v in parse_qs(query).items() if k in {"gclid", "ScCid", "li_fat_id"}}
    assert query_params(query) == expected


def forwarded(*pairs: tuple[bytes, bytes]) -> Any:
    return request_context(scope(headers=[(b"host", b"app:8000"), *pairs]))


def test_behind_a_trusted_proxy_the_url_is_the_public_one() -> None:
    ctx = forwarded((b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"shop.example"))
    assert ctx.url_for(1) == "https://shop.example/api/cart/add"
    assert ctx.url_for(0) == ctx.url == "https://app:8000/api/cart/add"  # no trust: what the server saw


def test_forwarded_proto_and_host_follow_the_hop_count() -> None:
    ctx = forwarded((b"x-forwarded-proto", b"http, https"), (b"x-forwarded-host", b"evil.example, shop.example"))
    assert ctx.url_for(1) == "https://shop.example/api/cart/add"  # the entry our proxy wrote
    assert ctx.url_for(2).startswith("http://evil.example/")  # two hops: the one before it


@pytest.mark.parametrize("proto, host", [(b"gopher", b"shop.example/x"), (b"", b"a b"), (b"javascript", b"@x")])
def test_forwarded_values_that_are_no_scheme_or_host_are_ignored(proto: bytes, host: bytes) -> None:
    ctx = forwarded((b"x-forwarded-proto", proto), (b"x-forwarded-host", host))
    assert ctx.url_for(1) == "https://app:8000/api/cart/add"


def test_page_url_is_same_origin_with_the_public_host() -> None:
    ctx = forwarded((b"x-forwarded-host", b"shop.example"), (b"referer", b"https://shop.example/products/a?gclid=1"))
    assert ctx.page_url(1) == "https://shop.example/products/a?gclid=1"
    assert ctx.page_url(0) == "https://app:8000/api/cart/add"  # the referer is another host than ours


def test_untrusted_forwarded_for_is_pointed_out_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_request, "_warned_forwarded", False)
    caplog.set_level(logging.WARNING, "layersync")
    behind_proxy = forwarded((b"x-forwarded-for", b"203.0.113.7"))
    applied = request_context(scope(headers=[(b"x-forwarded-for", b"10.0.0.2")]))  # the server used it
    warn_untrusted_forwarded(behind_proxy, 1)
    warn_untrusted_forwarded(applied, 0)
    warn_untrusted_forwarded(request_context(scope()), 0)
    assert not caplog.records
    for _ in range(3):
        request_user_data(behind_proxy, 0, behind_proxy.url)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "trust_proxy" in caplog.records[0].getMessage()
    assert "203.0.113.7" not in caplog.records[0].getMessage()


def test_hostile_requests_never_raise() -> None:
    rng = random.Random(1126)
    junk = [
        "",
        " ",
        "\r\n",
        "\x00",
        "é",
        "\u2028",
        ",",
        ":",
        "[",
        "]",
        "%",
        "%zz",
        "=",
        "&",
        ";",
        "/",
        "x" * 5000,
        "1.2.3.4",
    ]

    def text() -> str:
        return "".join(rng.choice(junk) for _ in range(rng.randint(0, 6)))

    for _ in range(300):
        names = [b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"referer", b"cookie"]
        headers = [(rng.choice(names), text().encode("utf-8")) for _ in range(rng.randint(0, 8))]
        s = scope(path="/" + text(), headers=headers, root_path=rng.choice(["", "/", "/x", text()]))
        s["query_string"] = text().encode()
        s["server"] = rng.choice([None, ("/sock", None), ("::1", 80), (text(), text())])
        env = environ(PATH_INFO=text(), QUERY_STRING=text(), SERVER_PORT=text(), HTTP_X_FORWARDED_FOR=text())
        env.pop("HTTP_HOST")
        for ctx in (request_context(s), request_context(env)):
            for hops in (0, 1, 3):
                request_user_data(ctx, hops, ctx.page_url(hops))
                assert ctx.url_for(hops).startswith(("http://", "https://"))
