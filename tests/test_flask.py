from __future__ import annotations

import logging

import pytest
from flask import Flask, jsonify
from helpers import SITE, LiveHub
from strategies import SDK_URLS

from layersync_middleware import ConfigurationError, current_event
from layersync_middleware._event import new_event_id
from layersync_middleware._settings import ENV_ALIASES, ENV_NAMES
from layersync_middleware.flask import FlaskLayerSync, settings_from_config
from layersync_middleware.testing import capture_events


def hub_config(hub: LiveHub) -> dict[str, object]:
    return {
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub.url,
        "LAYERSYNC_SENDER": "sync",
    }


def make_app(hub: LiveHub, **config: object) -> tuple[Flask, FlaskLayerSync]:
    app = Flask(__name__)
    app.config.update(hub_config(hub), LAYERSYNC_MATCHER=["/api/cart/*", "/api/orders"])
    app.config.update(config)

    @app.post("/api/cart/add")
    def cart_add():  # type: ignore[no-untyped-def]
        return jsonify(ok=True)

    @app.post("/api/orders")
    def orders():  # type: ignore[no-untyped-def]
        pending = current_event()
        assert pending is not None
        pending.update(order_id="O-FL", value=7.0)
        return jsonify(order_id="O-FL"), 201

    @app.post("/api/orders/fail")
    def fail():  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    return app, FlaskLayerSync(app)


def test_flask_extension_pairs_and_enriches(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    app, ext = make_app(hub)
    c = app.test_client()
    assert c.post("/api/cart/add", headers=ATC).status_code == 200
    assert c.post("/api/orders", headers=PUR).status_code == 201
    events = [e["event"] for e in hub.events("server")]
    assert [e["event_name"] for e in events] == ["add_to_cart", "purchase"]
    assert events[1]["custom_data"] == {"order_id": "O-FL", "value": 7.0}
    assert app.extensions["layersync"] is ext.client


def test_flask_error_handler_500_sends_nothing(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    app, _ = make_app(hub)
    assert app.test_client().post("/api/orders/fail", headers=PUR).status_code == 500
    assert hub.events() == []


def test_flask_client_tracks_with_the_request(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    app, ext = make_app(hub)
    with app.test_request_context(
        "/checkout/done", headers={"User-Agent": "UA/fl"}, environ_base={"REMOTE_ADDR": "10.9.9.9"}
    ):
        from flask import request

        ext.client.track_with_identity("purchase", {"email": "ada@example.com"}, {"value": 1}, request=request)
    [stored] = hub.events("server")
    assert stored["event"]["user_data"]["client_ip_address"] == "10.9.9.9"
    assert stored["event"]["event_source_url"] == "http://localhost/checkout/done"


def test_flask_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigurationError, match="LAYERSYNC_TIMEOUT_MS"):
        settings_from_config({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_TIMEOUT_MS": "x"}, {})
    with pytest.raises(ConfigurationError) as info:
        settings_from_config({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_MATCHERS": []}, {})
    # Named as the user wrote it, and the suggestion in the same vocabulary (14.2).
    assert str(info.value) == (
        'app.config["LAYERSYNC_MATCHERS"]: is not a LayerSync setting; did you mean app.config["LAYERSYNC_MATCHER"]?'
    )


def test_init_app_later() -> None:
    ext = FlaskLayerSync()
    with pytest.raises(RuntimeError, match="init_app"):
        ext.client  # noqa: B018


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [*ENV_NAMES.values(), *ENV_ALIASES]:
        monkeypatch.delenv(var, raising=False)


def test_missing_credentials_disable_tracking_with_one_error(
    no_env: None, caplog: pytest.LogCaptureFixture, ATC: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    app = Flask(__name__)
    app.config["LAYERSYNC_MATCHER"] = ["/api/cart/*"]
    app.post("/api/cart/add")(lambda: jsonify(ok=True))
    ext = FlaskLayerSync(app)  # does not raise: tracking must never take the app down
    assert app.test_client().post("/api/cart/add", headers=ATC).status_code == 200
    assert not ext.client.settings.enabled
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage().startswith(
        'app.config["LAYERSYNC_SITE_ID"] and app.config["LAYERSYNC_SECRET"] are not set'
    )
    assert "LayerSync tracking is disabled" in error.getMessage()


def test_invalid_settings_and_strict_mode_fail_in_init_app(no_env: None) -> None:
    app = Flask(__name__)
    app.config.update(LAYERSYNC_SITE_ID="s", LAYERSYNC_SECRET="pk_live_abc")
    with pytest.raises(ConfigurationError, match=r'^app\.config\["LAYERSYNC_SECRET"\]: is a publishable key'):
        FlaskLayerSync(app)
    app = Flask(__name__)
    app.config.update(LAYERSYNC_STRICT=True, LAYERSYNC_SECRET=SITE.secret_key)
    with pytest.raises(ConfigurationError, match=r'^app\.config\["LAYERSYNC_SITE_ID"\]: is not set'):
        FlaskLayerSync(app)


def test_two_apps_from_one_factory_each_get_their_own_client(
    hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]
) -> None:
    ext = FlaskLayerSync()  # module level, as with an app factory

    def create_app(matcher: list[str], timeout_ms: int) -> Flask:
        app = Flask(__name__)
        app.config.update(
            LAYERSYNC_SITE_ID=SITE.site_id,
            LAYERSYNC_SECRET=SITE.secret_key,
            LAYERSYNC_API_URL=hub.url,
            LAYERSYNC_SENDER="sync",
            LAYERSYNC_MATCHER=matcher,
            LAYERSYNC_SDK_RULES=False,  # the patterns only
            LAYERSYNC_TIMEOUT_MS=timeout_ms,
        )
        app.post("/api/cart/add")(lambda: jsonify(ok=True))
        ext.init_app(app)
        return app

    carts, orders = create_app(["/api/cart/*"], 3001), create_app(["/api/orders"], 3002)
    with carts.app_context():
        assert ext.client is carts.extensions["layersync"] and ext.client.settings.timeout_ms == 3001
    with orders.app_context():
        assert ext.client is orders.extensions["layersync"] and ext.client.settings.timeout_ms == 3002
    with pytest.raises(RuntimeError, match="app context"):
        ext.client  # noqa: B018  (which app's? refuse to guess)
    orders.test_client().post("/api/cart/add", headers=ATC)  # not in this app's matcher
    assert hub.events() == []
    carts.test_client().post("/api/cart/add", headers=ATC)
    assert [e["event"]["event_id"] for e in hub.events("server")] == [ATC["X-LayerSync-Event-Id"]]


def test_capture_events_reaches_the_extension_client(hub: LiveHub, ATC: dict[str, str], PUR: dict[str, str]) -> None:
    app, ext = make_app(hub)  # built before capturing, as a module-level app is
    with capture_events() as captured:
        assert app.test_client().post("/api/orders", headers=PUR).status_code == 201
        ext.client.flush()
    assert [e["event_id"] for e in captured.events] == [PUR["X-LayerSync-Event-Id"]]
    assert captured.events[0]["custom_data"] == {"order_id": "O-FL", "value": 7.0}
    assert hub.events() == []
    app.test_client().post("/api/cart/add", headers=ATC)  # restored on exit: to the hub again
    assert [e["event"]["event_id"] for e in hub.events("server")] == [ATC["X-LayerSync-Event-Id"]]


def test_no_matcher_pairs_what_the_sdk_stamps_under_a_mount_and_not_on_a_get(hub: LiveHub) -> None:
    app = Flask(__name__)
    app.config.update(hub_config(hub))
    app.route("/cart", methods=["GET", "POST"])(lambda: jsonify(ok=True))
    ext = FlaskLayerSync(app)
    atc = {"X-LayerSync-Event-Id": new_event_id("add_to_cart"), "X-LayerSync-Event-Name": "add_to_cart"}
    c = app.test_client()
    # Adapters configured alike share one client (a Django test's may have counted already).
    before = ext.client.stats().dropped.get("read_only_method", 0)
    # Mounted at /api (SCRIPT_NAME): the browser called /api/cart, which the SDK stamps.
    assert c.post("/cart", headers=atc, base_url="http://localhost/api").status_code == 200
    assert c.get("/cart", headers=atc, base_url="http://localhost/api").status_code == 200
    assert [e["event"]["event_id"] for e in hub.events("server")] == [atc["X-LayerSync-Event-Id"]]
    assert ext.client.stats().dropped.get("read_only_method", 0) - before == 1


@pytest.mark.parametrize("mount", ["", "/api"], ids=["root", "mounted"])
def test_every_default_rule_pairs_once_with_no_matcher(hub: LiveHub, mount: str) -> None:
    app = Flask(__name__)
    app.config.update(hub_config(hub))
    app.route("/", defaults={"rest": ""}, methods=["POST"])(
        app.route("/<path:rest>", methods=["POST"])(lambda rest: "ok")
    )
    FlaskLayerSync(app)
    c, sent = app.test_client(), []
    for url, name in SDK_URLS:
        headers = {"X-LayerSync-Event-Id": new_event_id(name), "X-LayerSync-Event-Name": name}
        sent.append((headers["X-LayerSync-Event-Id"], name))
        for _ in range(2):  # the SDK re-sends a stale id: forwarded once
            assert c.post(url, headers=headers, base_url=f"http://localhost{mount}").status_code == 200
    assert sorted((e["event"]["event_id"], e["event"]["event_name"]) for e in hub.events("server")) == sorted(sent)


def test_the_client_property_says_which_init_app_is_missing(hub: LiveHub) -> None:
    ext = FlaskLayerSync()
    with pytest.raises(RuntimeError, match=r"^FlaskLayerSync.init_app\(app\) has not been called$"):
        _ = ext.client
    shop, other = Flask("shop"), Flask("other")
    for app in (shop, other):
        app.config.update(hub_config(hub))
        ext.init_app(app)
    with pytest.raises(RuntimeError, match="several apps use this FlaskLayerSync: use .client inside an app context"):
        _ = ext.client
    with shop.app_context():
        assert ext.client is shop.extensions["layersync"]
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="not been called for the current app"):
        _ = ext.client
