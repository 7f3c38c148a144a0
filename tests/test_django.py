from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, cast

import django
import pytest
from django.conf import settings as dj
from helpers import SITE, LiveHub, StartResponse, settings
from strategies import SDK_URLS

if not dj.configured:
    dj.configure(
        DEBUG=False,
        SECRET_KEY="not-secret-test-only",
        ALLOWED_HOSTS=["testserver", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["layersync_middleware.django"],
        MIDDLEWARE=["layersync_middleware.django.LayerSyncMiddleware"],
        LAYERSYNC={},
    )
    django.setup()

from django.core.checks import CheckMessage, run_checks
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path, re_path

from layersync_middleware import ConfigurationError, LayerSync, LayerSyncWSGIMiddleware, current_event
from layersync_middleware._event import new_event_id
from layersync_middleware._settings import ENV_ALIASES, ENV_NAMES
from layersync_middleware.django import LayerSyncMiddleware, conf
from layersync_middleware.testing import capture_events

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message


def environ_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` as WSGI environ keys (``HTTP_X_LAYERSYNC_EVENT_ID``)."""
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def cart_add(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True}, status=int(request.GET.get("status", 200)))


async def orders(request: HttpRequest) -> HttpResponse:
    pending = current_event()
    if pending is not None:
        pending.update(order_id="O-DJ", value=42.0)
    return JsonResponse({"order_id": "O-DJ"}, status=201)


# "cart" and "checkout" as routed by an app mounted at /api (SCRIPT_NAME), issue 20's B1.
urlpatterns = [
    path("api/cart/add", cart_add),
    path("api/orders", orders),
    path("cart", cart_add),
    path("checkout", cart_add),
]


def layersync(hub: LiveHub, **extra: Any) -> dict[str, Any]:
    return {
        "SITE_ID": SITE.site_id,
        "SECRET_KEY": SITE.secret_key,
        "API_URL": hub.url,
        "SENDER": "sync",
        "MATCHER": ["/api/cart/*", "/api/orders"],
        **extra,
    }


def test_sync_view_pairs(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub)):
        r = Client().post("/api/cart/add", headers={"User-Agent": "UA/dj", **ATC}, REMOTE_ADDR="10.1.1.1")
    assert r.status_code == 200
    [stored] = hub.events("server")
    assert stored["event"]["event_id"] == ATC["X-LayerSync-Event-Id"]
    assert stored["event"]["user_data"]["client_ip_address"] == "10.1.1.1"


def test_async_view_enrichment_through_the_async_chain(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    import asyncio

    async def go() -> Any:
        # Real header names: before 4.2.30, AsyncClient's headers= kept the underscores.
        headers: dict[str, Any] = {k.lower(): v for k, v in PUR.items()}
        return await AsyncClient().post("/api/orders", **headers)

    with override_settings(LAYERSYNC=layersync(hub)):
        r = asyncio.run(go())
    assert r.status_code == 201
    [stored] = hub.events("server")
    assert stored["event"]["custom_data"] == {"order_id": "O-DJ", "value": 42.0}


def test_failed_response_and_forged_name(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub)):
        Client().post("/api/cart/add?status=500", headers=ATC)
        Client().post("/api/cart/add", headers=PUR)
    assert hub.events() == []


def test_disallowed_host_does_not_break_tracking(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub), ALLOWED_HOSTS=["*"]):
        Client().post("/api/cart/add", headers={"Host": "evil.example:80", **ATC})
    assert hub.events("server")[0]["event"]["event_source_url"].startswith("http://evil.example")


def test_disabled_or_unconfigured_is_not_used() -> None:
    with override_settings(LAYERSYNC={"ENABLED": False}), pytest.raises(MiddlewareNotUsed):
        LayerSyncMiddleware(lambda r: HttpResponse())


def test_both_wsgi_and_django_middleware_send_once(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    # A client of its own (other settings): only the marker can prevent a second event.
    own = settings(api_url=hub.url, sender="sync", matcher=["/api/cart/*"], timeout_ms=4321)
    with override_settings(LAYERSYNC=layersync(hub)), LayerSync(own) as client:
        handler = WSGIHandler()
        app = LayerSyncWSGIMiddleware(handler, client=client)
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/cart/add",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "REMOTE_ADDR": "10.0.0.9",
            "HTTP_HOST": "testserver",
            **environ_headers(ATC),
        }
        body = b"".join(app(environ, StartResponse()))
    assert b"ok" in body
    assert len(hub.events("server")) == 1


def layersync_messages() -> list[CheckMessage]:
    return [m for m in run_checks() if m.id is not None and m.id.startswith("layersync")]


def layersync_ids() -> list[str | None]:
    return [m.id for m in layersync_messages()]


def test_system_checks_name_the_setting() -> None:
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "pk_nope", "MATCHER": ["/x"]}):
        [error] = layersync_messages()
    assert error.id == "layersync.E001" and "LAYERSYNC['SECRET_KEY']" in error.msg and "publishable" in error.msg
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "sk_x", "TIMEOUT": 5}):
        [error] = layersync_messages()
    assert "LAYERSYNC['TIMEOUT']:" in error.msg and "did you mean LAYERSYNC['TIMEOUT_MS']" in error.msg
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "sk_x"}):
        assert layersync_ids() == []  # no matcher: the browser SDK's rules pair
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "sk_x", "SDK_RULES": False}):
        ids = layersync_ids()
    assert ids == ["layersync.W001"]
    with override_settings(LAYERSYNC="nope"):
        ids = layersync_ids()
    assert ids == ["layersync.E001"]
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "sk_x", "MATCHER": ["/x"]}, MIDDLEWARE=[]):
        ids = layersync_ids()
    assert ids == ["layersync.W002"]


def test_consent_hook_by_dotted_path(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub, CONSENT=f"{__name__}.deny_all")):
        Client().post("/api/cart/add", headers=ATC)
    assert hub.events() == []


def deny_all(request: HttpRequest) -> bool:
    return False


def streaming(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"a", b"b"]))


urlpatterns.append(path("api/cart/stream", streaming))


def test_streaming_response_pairs_when_returned(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub)):
        r = Client().post("/api/cart/stream", headers=ATC)
        assert len(hub.events("server")) == 1  # queued when the response was returned, before the body
        assert r.streaming and r.getvalue() == b"ab"


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view's own bug")


urlpatterns.append(path("api/orders/broken", broken))


def test_view_exception_becomes_500_and_sends_nothing(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub, MATCHER=["/api/orders/**"])):
        r = Client(raise_request_exception=False).post("/api/orders/broken", headers=PUR)
    assert r.status_code == 500
    assert hub.events() == []


def test_malformed_headers_are_refused(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    with override_settings(LAYERSYNC=layersync(hub)):
        forged = {"X-LayerSync-Event-Id": "<script>", "X-LayerSync-Event-Name": "add_to_cart"}
        r = Client().post("/api/cart/add", headers=forged)
        assert r.status_code == 200
        r = Client().post("/api/cart/add", headers={**ATC, "X-LayerSync-Event-Name": "x" * 300})
        assert r.status_code == 200
    assert hub.events() == []


def test_both_asgi_and_django_middleware_send_once(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    import asyncio

    from django.core.handlers.asgi import ASGIHandler

    from layersync_middleware import LayerSyncMiddleware as ASGIMiddleware

    # A client of its own (other settings): only the marker can prevent a second event.
    own = settings(api_url=hub.url, sender="sync", matcher=["/api/cart/*"], timeout_ms=4322)
    with override_settings(LAYERSYNC=layersync(hub)), LayerSync(own) as client:
        # django-stubs types the handler's scope as a dict, Starlette's ASGI types (the
        # middleware's) as a MutableMapping: the same protocol, spelled two ways.
        app = ASGIMiddleware(cast("ASGIApp", ASGIHandler()), client=client)
        headers = [(b"host", b"testserver")] + [(k.lower().encode(), v.encode()) for k, v in ATC.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/cart/add",
            "raw_path": b"/api/cart/add",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("10.0.0.8", 1),
            "server": ("testserver", 80),
        }
        sent: list[Message] = []
        bodies = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, object]:
            if bodies:
                return bodies.pop()
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert len(hub.events("server")) == 1


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [*ENV_NAMES.values(), *ENV_ALIASES]:
        monkeypatch.delenv(var, raising=False)


def test_missing_credentials_are_a_warning_not_an_error(no_env: None) -> None:
    with override_settings(LAYERSYNC={"MATCHER": ["/api/cart/*"]}):
        [message] = layersync_messages()
    assert message.id == "layersync.W003" and not message.is_serious()
    assert message.msg.startswith("LAYERSYNC['SITE_ID'] and LAYERSYNC['SECRET_KEY'] are not set")
    with override_settings(LAYERSYNC={"site_id": "s"}):  # named in the case the user writes keys
        [message] = layersync_messages()
    assert message.msg.startswith("LAYERSYNC['secret_key'] is not set")
    with override_settings(LAYERSYNC={"MATCHER": ["/api/cart/*"], "STRICT": True}):
        assert layersync_ids() == ["layersync.E001"]


def test_missing_credentials_disable_the_middleware_with_one_error(
    no_env: None, caplog: pytest.LogCaptureFixture, ATC: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    with override_settings(LAYERSYNC={"MATCHER": ["/api/cart/*"]}):
        with pytest.raises(MiddlewareNotUsed):
            LayerSyncMiddleware(lambda r: HttpResponse())
        assert Client().post("/api/cart/add", headers=ATC).status_code == 200  # the site keeps serving
    errors = [r.getMessage() for r in caplog.records if r.name == "layersync" and r.levelno >= logging.ERROR]
    assert errors and errors[0].startswith("LAYERSYNC['SITE_ID'] and LAYERSYNC['SECRET_KEY'] are not set")
    assert "LayerSync tracking is disabled" in errors[0]


def test_load_disables_on_missing_credentials_and_raises_on_invalid(
    no_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    with override_settings(LAYERSYNC={"MATCHER": ["/x"], "SECRET_KEY": SITE.secret_key}):
        settings_, consent, _ = conf.load()
    assert not settings_.enabled and consent is None
    [record] = [r for r in caplog.records if r.name == "layersync"]
    assert record.levelno == logging.ERROR and record.getMessage().startswith("LAYERSYNC['SITE_ID'] is not set")
    with override_settings(LAYERSYNC={"SITE_ID": "s", "SECRET_KEY": "pk_live_x"}), pytest.raises(ConfigurationError):
        conf.load()
    with (
        override_settings(LAYERSYNC={"SECRET_KEY": SITE.secret_key, "STRICT": True}),
        pytest.raises(ConfigurationError, match=r"^LAYERSYNC\['SITE_ID'\]: is not set"),
    ):
        conf.load()


def test_capture_events_reaches_the_django_middleware_client(
    hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]
) -> None:
    with override_settings(LAYERSYNC=layersync(hub)):
        with capture_events() as captured:
            assert Client().post("/api/cart/add", headers=ATC).status_code == 200
        assert [e["event_id"] for e in captured.wait_for(1)] == [ATC["X-LayerSync-Event-Id"]]
        assert hub.events() == []
        Client().post("/api/orders", headers=PUR)  # restored on exit: to the hub again
    assert [e["event"]["event_id"] for e in hub.events("server")] == [PUR["X-LayerSync-Event-Id"]]
    assert len(captured.events) == 1


@pytest.mark.parametrize("matcher", [None, ["/**"]], ids=["no-matcher", "catch-all"])
def test_a_mounted_app_pairs_the_sdks_name_and_a_get_pairs_nothing(hub: LiveHub, matcher: list[str] | None) -> None:
    config = {k: v for k, v in layersync(hub).items() if k != "MATCHER"}
    if matcher is not None:
        config["MATCHER"] = matcher
    atc = {"X-LayerSync-Event-Id": new_event_id("add_to_cart"), "X-LayerSync-Event-Name": "add_to_cart"}
    bc = {"X-LayerSync-Event-Id": new_event_id("begin_checkout"), "X-LayerSync-Event-Name": "begin_checkout"}
    with override_settings(LAYERSYNC=config):
        # The browser called /api/cart and /api/checkout: the app routes on /cart and /checkout.
        assert Client().post("/cart", headers=atc, SCRIPT_NAME="/api").status_code == 200
        assert Client().post("/checkout?step=1", headers=bc, SCRIPT_NAME="/api").status_code == 200
        assert Client().get("/cart", headers=atc, SCRIPT_NAME="/api").status_code == 200
    ids = [e["event"]["event_id"] for e in hub.events("server")]
    assert sorted(ids) == sorted([atc["X-LayerSync-Event-Id"], bc["X-LayerSync-Event-Id"]])


class CatchAll:
    """A URLconf that answers every path, as a shop's routes would."""

    urlpatterns = [re_path(r"^.*$", cart_add)]


@pytest.mark.parametrize("script_name", ["", "/api"], ids=["root", "mounted"])
def test_every_default_rule_pairs_once_with_no_matcher(hub: LiveHub, script_name: str) -> None:
    config = {k: v for k, v in layersync(hub).items() if k != "MATCHER"}
    sent = []
    with override_settings(LAYERSYNC=config, ROOT_URLCONF=CatchAll):
        for url, name in SDK_URLS:
            headers = {"X-LayerSync-Event-Id": new_event_id(name), "X-LayerSync-Event-Name": name}
            sent.append((headers["X-LayerSync-Event-Id"], name))
            for _ in range(2):  # the SDK re-sends a stale id: forwarded once
                assert Client().post(url, headers=headers, SCRIPT_NAME=script_name).status_code == 200
    assert sorted((e["event"]["event_id"], e["event"]["event_name"]) for e in hub.events("server")) == sorted(sent)


@pytest.mark.extras
def test_celery_sender_checks_name_the_app_setting_and_the_worker_command_line() -> None:
    celery = {"SITE_ID": "s", "SECRET_KEY": "sk_x", "MATCHER": ["/x"], "SENDER": "celery"}
    with override_settings(LAYERSYNC={**celery, "CELERY_APP": "no_such_module:app"}):
        [error] = layersync_messages()
    assert error.id == "layersync.E002" and "LAYERSYNC['CELERY_APP']: cannot import 'no_such_module:app'" in error.msg
    with override_settings(LAYERSYNC={**celery, "CELERY_APP": "example_apps.fastapi_celery.celery:app"}):
        assert layersync_ids() == []  # the app's default queue: the plain worker consumes it
    with override_settings(
        LAYERSYNC={**celery, "CELERY_APP": "example_apps.fastapi_celery.celery:app", "CELERY_QUEUE": "tracking"}
    ):
        [warning] = layersync_messages()
    assert warning.id == "layersync.W004" and "celery -A shop worker -Q celery,tracking" in str(warning.hint)


@pytest.mark.parametrize(
    ("hook", "said"),
    [
        ("no_such_module.consent", "LAYERSYNC['CONSENT']: cannot import 'no_such_module.consent'"),
        (42, "LAYERSYNC['CONSENT']: must be a callable or a dotted path to one"),
    ],
)
def test_a_consent_hook_that_is_not_one_is_named_as_written(no_env: None, hook: object, said: str) -> None:
    wrong = {"SITE_ID": "s", "SECRET_KEY": SITE.secret_key, "CONSENT": hook}
    with override_settings(LAYERSYNC=wrong), pytest.raises(ConfigurationError) as info:
        conf.load()
    assert str(info.value).startswith(said)
