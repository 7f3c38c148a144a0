from __future__ import annotations

import logging
import pathlib
import pickle
import subprocess
import sys

import pytest

from layersync_middleware import ConfigurationError, LayerSync, Settings, _settings
from layersync_middleware._settings import settings_or_disabled

KEY = "sk_live_0123456789abcdef"
CREDS = {"LAYERSYNC_SITE_ID": "site_1", "LAYERSYNC_SECRET": KEY}


def make(**options: object) -> Settings:
    return Settings(**{"site_id": "site_1", "secret_key": KEY, **options})  # type: ignore[arg-type]


def test_defaults_mirror_the_node_sdk() -> None:
    s = make()
    assert s.api_url == "https://layersynchub.com"
    assert (s.timeout_ms, s.max_retries, s.trust_proxy, s.console_log) == (5000, 2, 0, False)
    assert s.sender == "thread" and s.enabled


def test_publishable_key_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigurationError) as info:
        make(secret_key="pk_live_0123456789")
    assert info.value.setting == "secret_key"
    assert "publishable" in str(info.value) and "sk_" in str(info.value)
    assert "0123456789" not in str(info.value)


@pytest.mark.parametrize("key", [None, "", "   ", "sk_ has space", "sk_\u00e9t\u00e9", 42])
def test_missing_or_malformed_secret_key(key: object) -> None:
    with pytest.raises(ConfigurationError, match="^secret_key: "):
        make(secret_key=key)


def test_key_is_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        make(secret_key="sk_abc\x00def")
    assert "abc" not in str(info.value)


@pytest.mark.parametrize("site", [None, "", "a b", "x" * 200, -1, 0, True])
def test_bad_site_id(site: object) -> None:
    with pytest.raises(ConfigurationError, match="^site_id: "):
        make(site_id=site)


def test_numeric_site_id_is_kept_as_a_number() -> None:
    assert make(site_id=2388).site_id == 2388


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hub.example",
        "http://hub.example",
        "http://app.localhost:8787",  # DNS decides where *.localhost goes (10.5)
        "http://127.0.0.1.nip.io",
        "https://",
        "https://user:pw@hub.example",
        "https://h/?x=1",
        "nope",
    ],
)
def test_bad_api_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="^api_url: "):
        make(api_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://localhost:1", "http://[::1]:80", "https://h.example/"]
)
def test_good_api_url(url: str) -> None:
    assert make(api_url=url).api_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout_ms", 0),
        ("timeout_ms", 10**9),
        ("max_retries", -1),
        ("max_retries", 11),
        ("trust_proxy", -1),
        ("trust_proxy", "two"),
        ("max_queue_size", 0),
        ("timeout_ms", True),
        ("shutdown_timeout", 61),
    ],
)
def test_numbers_out_of_range(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name}: "):
        make(**{name: value})


def test_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError):
        make(time_out=5)
    with pytest.raises(ConfigurationError, match="did you mean 'timeout_ms'"):
        Settings.from_mapping({"site_id": "s", "secret_key": KEY, "timeout_mss": 5}, spell=str, environ={})


def test_malformed_matcher_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="^matcher: pattern"):
        make(matcher=["api/cart"])


def test_sender_kind() -> None:
    assert make(sender="celery").sender == "celery"
    with pytest.raises(ConfigurationError, match="^sender: "):
        make(sender="process")


def test_from_env_names_the_variable() -> None:
    env = {"LAYERSYNC_SITE_ID": "site_1", "LAYERSYNC_SECRET": KEY, "LAYERSYNC_TIMEOUT_MS": "abc"}
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    assert info.value.setting == "LAYERSYNC_TIMEOUT_MS"
    env["LAYERSYNC_TIMEOUT_MS"] = "2500"
    env["LAYERSYNC_SECRET"] = "pk_oops"
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_SECRET: is a publishable key"):
        Settings.from_env(env)


def test_from_env_reads_everything() -> None:
    env = {
        "LAYERSYNC_SITE_ID": "site_1",
        "LAYERSYNC_SECRET": KEY,
        "LAYERSYNC_API_URL": "http://127.0.0.1:9",
        "LAYERSYNC_MATCHER": "/api/cart/*, /api/orders/*=purchase|refund",
        "LAYERSYNC_TRUST_PROXY": "1",
        "LAYERSYNC_CONSOLE_LOG": "yes",
        "LAYERSYNC_MAX_RETRIES": "0",
        "LAYERSYNC_SENDER": "sync",
        "LAYERSYNC_PUBLISHABLE_KEY": "pk_ignored",  # other LAYERSYNC_* variables are not ours
    }
    s = Settings.from_env(env, timeout_ms=1000)
    assert s.trust_proxy == 1 and s.console_log and s.max_retries == 0 and s.timeout_ms == 1000
    assert [r.pattern for r in s.matcher.rules] == ["/api/cart/*", "/api/orders/*"]
    assert s.matcher.rules[1].names == frozenset({"purchase", "refund"})
    assert s.sender == "sync"


def test_secret_key_alias_variable() -> None:
    s = Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET_KEY": KEY})
    assert s.secret_key.reveal() == KEY


def test_disabled_needs_no_credentials() -> None:
    s = Settings.from_env({"LAYERSYNC_ENABLED": "false"})
    assert not s.enabled


def test_immutable_hashable_and_replace() -> None:
    s = make()
    with pytest.raises(AttributeError):
        s.timeout_ms = 1
    assert s == make() and hash(s) == hash(make())
    assert s.replace(timeout_ms=1000).timeout_ms == 1000
    assert s.timeout_ms == 5000


def test_secret_key_never_in_repr_str_or_pickle(caplog: pytest.LogCaptureFixture) -> None:
    s = make()
    client = LayerSync(s)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("layersync").info("settings %s %r", s, client)
    for text in (repr(s), str(s), repr(s.secret_key), str(s.secret_key), repr(client), caplog.text):
        assert KEY not in text and "0123456789abcdef" not in text
    with pytest.raises(TypeError):
        pickle.dumps(s.secret_key)
    client.shutdown(0)


def test_unknown_client_and_middleware_options_suggest_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    from layersync_middleware import LayerSyncMiddleware, LayerSyncWSGIMiddleware

    with pytest.raises(ConfigurationError, match="^timeout: .*did you mean 'timeout_ms'"):
        LayerSync(site_id="s", secret_key=KEY, timeout=5)
    with pytest.raises(ConfigurationError, match="^matchers: .*did you mean 'matcher'"):  # built at start-up
        LayerSyncWSGIMiddleware(lambda *a: [], site_id="s", secret_key=KEY, matchers=["/x"])

    # ASGI stacks are built lazily, inside the server: there the same error disables tracking.
    async def asgi_app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    caplog.set_level(logging.ERROR, logger="layersync")
    LayerSyncMiddleware(asgi_app, site_id="s", secret_key=KEY, matchers=["/x"])
    assert (
        "matchers: is not a LayerSync setting; did you mean 'matcher'?: LayerSync tracking is disabled" in caplog.text
    )


def test_matcher_string_is_read_like_the_environment_variable() -> None:
    s = make(matcher="/api/cart/*, /api/orders=purchase")
    assert [r.pattern for r in s.matcher.rules] == ["/api/cart/*", "/api/orders"]
    assert s.matcher.rules[1].names == frozenset({"purchase"})


def test_new_settings_defaults_and_timeout_in_seconds() -> None:
    s = make(timeout_ms=2500)
    assert (s.strict, s.allow_insecure_http, s.spool_path, s.dedup_url) == (False, False, None, None)
    assert (s.celery_queue, s.celery_app, s.default_phone_region) == ("", None, None)
    assert s.timeout == 2.5


def test_new_settings_from_env_and_validated() -> None:
    env = {
        "LAYERSYNC_SITE_ID": "site_1",
        "LAYERSYNC_SECRET": KEY,
        "LAYERSYNC_STRICT": "1",
        "LAYERSYNC_ALLOW_INSECURE_HTTP": "yes",
        "LAYERSYNC_API_URL": "http://hub.staging.internal:8080",
        "LAYERSYNC_SPOOL_PATH": "/var/spool/layersync.db",
        "LAYERSYNC_DEDUP_URL": "redis://:hunter2@redis:6379/0",
        "LAYERSYNC_CELERY_QUEUE": "tracking",
        "LAYERSYNC_DEFAULT_PHONE_REGION": "fr",
        "LAYERSYNC_SENDER": "celery",
    }
    s = Settings.from_env(env)
    assert s.strict and s.allow_insecure_http and s.api_url == "http://hub.staging.internal:8080"
    assert (s.spool_path, s.dedup_url, s.celery_queue) == (
        "/var/spool/layersync.db",
        env["LAYERSYNC_DEDUP_URL"],
        "tracking",
    )
    assert (s.default_phone_region, s.sender) == ("FR", "celery")
    for var, bad in [
        ("LAYERSYNC_STRICT", "maybe"),
        ("LAYERSYNC_ALLOW_INSECURE_HTTP", "2"),
        ("LAYERSYNC_SPOOL_PATH", " "),
        ("LAYERSYNC_DEDUP_URL", "http://redis:6379"),
        ("LAYERSYNC_CELERY_QUEUE", "bad\tqueue"),
        ("LAYERSYNC_CELERY_APP", "proj/celery.py"),
        ("LAYERSYNC_DEFAULT_PHONE_REGION", "FRA"),
    ]:
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env({**env, var: bad})
        assert info.value.setting == var


def test_spool_path_accepts_a_path() -> None:
    assert make(spool_path=pathlib.Path("/tmp/spool.db")).spool_path == "/tmp/spool.db"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@redis.example:6379/0",
        "rediss://default:hunter2@redis.example:6380",
        "unix:///run/redis.sock?password=hunter2&db=1",
    ],
)
def test_dedup_url_password_is_masked(url: str) -> None:
    s = make(dedup_url=url)
    assert s.dedup_url == url  # the real URL, for the client that connects
    assert "hunter2" not in repr(s) and "********" in repr(s)


@pytest.mark.parametrize("url", ["redis://:hunter2@redis.example:99999/0", "redis://:hunter2@/0", "ftp://:hunter2@h"])
def test_dedup_url_errors_do_not_echo_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="^dedup_url: ") as info:
        make(dedup_url=url)
    assert "hunter2" not in str(info.value)


# -- 14.1: missing credentials disable, invalid ones fail where it is seen, strict fails always


def test_missing_credentials_are_flagged_and_named_as_the_source_spells_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LAYERSYNC_SECRET": KEY})
    assert info.value.missing and info.value.settings == ("LAYERSYNC_SITE_ID",)
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({})
    assert info.value.missing and info.value.settings == ("LAYERSYNC_SITE_ID", "LAYERSYNC_SECRET")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LAYERSYNC_SITE_ID": "  ", "LAYERSYNC_SECRET": KEY})  # an unset ${VAR} in compose
    assert info.value.missing and info.value.setting == "LAYERSYNC_SITE_ID"
    with pytest.raises(ConfigurationError) as info:
        Settings(site_id="s")
    assert info.value.missing and str(info.value).startswith("secret_key: is not set")
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LAYERSYNC_SITE_ID": "s"}, secret_key=None)  # a keyword is named as the keyword
    assert info.value.setting == "secret_key"
    with pytest.raises(ConfigurationError) as info:
        make(secret_key="pk_live_0123")
    assert not info.value.missing


def test_disabled_settings_cannot_be_re_enabled_without_credentials() -> None:
    with pytest.raises(ConfigurationError, match="^site_id and secret_key: are not set") as info:
        Settings.disabled().replace(enabled=True)
    assert info.value.missing


def test_missing_credentials_disable_with_one_error_naming_what_to_set(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    s = settings_or_disabled(lambda: Settings.from_env({"LAYERSYNC_SECRET": KEY, "LAYERSYNC_MATCHER": "/api/*"}))
    assert s == Settings.disabled() and not s.enabled
    [record] = [r for r in caplog.records if r.name == "layersync"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("LAYERSYNC_SITE_ID is not set (the site id from your LayerSync dashboard)")
    assert "LayerSync tracking is disabled" in record.getMessage() and KEY not in caplog.text


def test_the_disabled_error_is_seen_in_an_app_without_logging_config() -> None:
    # The library adds a NullHandler for silence by default; this one line must get through.
    code = (
        "import logging\n"
        "logging.getLogger('layersync').addHandler(logging.NullHandler())\n"
        "from layersync_middleware._settings import Settings, settings_or_disabled\n"
        "settings_or_disabled(lambda: Settings.from_env({}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "LAYERSYNC_SITE_ID and LAYERSYNC_SECRET are not set" in done.stderr
    assert done.stderr.count("tracking is disabled") == 1


def test_invalid_settings_raise_at_start_up_and_disable_when_built_lazily(caplog: pytest.LogCaptureFixture) -> None:
    env = {"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "pk_live_0123", "LAYERSYNC_MATCHER": "/api/*"}
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_SECRET: is a publishable key"):
        settings_or_disabled(lambda: Settings.from_env(env), raise_invalid=True)
    caplog.set_level(logging.ERROR, logger="layersync")
    assert not settings_or_disabled(lambda: Settings.from_env(env)).enabled
    assert "LAYERSYNC_SECRET: is a publishable key" in caplog.text and "pk_live_0123" not in caplog.text
    # Missing credentials disable even where invalid ones raise.
    assert not settings_or_disabled(lambda: Settings.from_env({}), raise_invalid=True).enabled


def test_strict_mode_raises_on_missing_credentials_as_argument_or_setting() -> None:
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_SITE_ID: is not set"):
        settings_or_disabled(lambda: Settings.from_env({"LAYERSYNC_SECRET": KEY}), strict=True)
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_SITE_ID: is not set") as info:
        settings_or_disabled(lambda: Settings.from_env({"LAYERSYNC_SECRET": KEY, "LAYERSYNC_STRICT": "1"}))
    assert info.value.strict
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_TIMEOUT_MS: "):  # strict seen before a later error
        settings_or_disabled(
            lambda: Settings.from_env({**CREDS, "LAYERSYNC_STRICT": "on", "LAYERSYNC_TIMEOUT_MS": "x"})
        )
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_MATCHERS: "):  # and before an unknown key
        settings_or_disabled(lambda: Settings.from_mapping({"strict": True, "matchers": []}, spell=_settings.env_name))


# -- 14.2: errors name what the user set


def test_errors_name_the_keyword_the_variable_or_the_alias() -> None:
    with pytest.raises(ConfigurationError, match="^timeout_ms: "):
        Settings(site_id="s", secret_key=KEY, timeout_ms="x")
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_SECRET_KEY: is a publishable key"):
        Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET_KEY": "pk_x"})
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_API_URL: .* set LAYERSYNC_ALLOW_INSECURE_HTTP to true"):
        Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": KEY, "LAYERSYNC_API_URL": "http://hub:8"})
    assert _settings.env_field("LAYERSYNC_SECRET_KEY") == "secret_key"  # the alias lives in one place


# -- 14.3 / 10.5 / 10.6: keys and transport security


def test_secret_key_without_prefix_is_accepted_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_settings, "_unprefixed_key_warned", False)
    caplog.set_level(logging.WARNING, logger="layersync")
    assert make(secret_key="a1b2c3d4e5").secret_key.reveal() == "a1b2c3d4e5"
    make(secret_key="a1b2c3d4e5", timeout_ms=1000)
    [record] = [r for r in caplog.records if r.name == "layersync"]
    assert record.levelno == logging.WARNING and "does not start with 'sk_'" in record.getMessage()
    assert "a1b2c3d4e5" not in caplog.text


def test_plain_http_to_a_remote_hub_needs_the_opt_in() -> None:
    with pytest.raises(ConfigurationError) as info:
        make(api_url="http://hub.staging.internal:8080")
    assert "allow_insecure_http" in str(info.value) and "in clear" in str(info.value)
    assert make(api_url="http://hub.staging.internal:8080", allow_insecure_http=True).api_url.startswith("http://")


@pytest.mark.parametrize("url", ["http://localhost:8787", "http://127.0.0.2:1", "http://[::1]:1"])
def test_only_literal_loopback_counts_for_plain_http(url: str) -> None:
    assert make(api_url=url).api_url == url


@pytest.mark.parametrize(
    "url",
    [
        f"https://{KEY}@hub.example",
        f"https://site:{KEY}@hub.example",
        f"https://hub.example/?key={KEY}",
        f"https://hub.example/#{KEY}",
        f"http://hub.example/{KEY}",
        f"https://hub.example:{KEY}/",
        f"ftp://hub.example/{KEY}",
    ],
)
def test_secret_key_in_the_url_is_never_echoed(url: str) -> None:
    with pytest.raises(ConfigurationError, match="^api_url: ") as info:
        make(api_url=url)
    assert "0123456789abcdef" not in str(info.value)
    with pytest.raises(ConfigurationError, match="^LAYERSYNC_API_URL: ") as info:
        Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": KEY, "LAYERSYNC_API_URL": url})
    assert "0123456789abcdef" not in str(info.value)


# -- issue 20: the browser SDK's rules and the server's copy of its endpoint options


def test_sdk_rule_settings_from_the_environment_flask_and_django_checked_at_start_up() -> None:
    from layersync_middleware.flask import settings_from_config

    env = {**CREDS, "LAYERSYNC_CART_ENDPOINTS": r"/api/v1/basket\b  /bag/add", "LAYERSYNC_PAIR_READ_ONLY": "1"}
    s = Settings.from_env(env)
    assert s.cart_endpoints == (r"/api/v1/basket\b", "/bag/add") and s.pair_read_only and s.sdk_rules
    assert s.matcher.verdict("/api/v1/BASKET", "/api/v1/BASKET").names == frozenset({"add_to_cart"})
    assert s == Settings.from_env(env) and s != make()  # compared by value, rules included
    assert not Settings.from_env({**CREDS, "LAYERSYNC_SDK_RULES": "off"}).matcher  # nothing can pair
    with pytest.raises(ConfigurationError, match=r"^LAYERSYNC_ORDER_ENDPOINTS: '/orders\(' is not a valid regular"):
        Settings.from_env({**CREDS, "LAYERSYNC_ORDER_ENDPOINTS": "/orders("})
    with pytest.raises(ConfigurationError, match=r'^app.config\["LAYERSYNC_CHECKOUT_ENDPOINTS"\]: must be a list'):
        settings_from_config({"LAYERSYNC_CHECKOUT_ENDPOINTS": 3}, environ=CREDS)
    with pytest.raises(ConfigurationError, match=r"^LAYERSYNC\['sdk_rules'\]: must be true or false"):
        Settings.from_mapping({"sdk_rules": "maybe"}, spell=lambda f: f"LAYERSYNC[{f!r}]", environ=CREDS)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("console_log", 2, "must be true or false (1/0, yes/no, on/off)"),
        ("console_log", "maybe", "must be true or false (1/0, yes/no, on/off)"),
        ("api_url", "https://[::1:80", "is not a valid URL"),
        ("api_url", "https://hub.example:99999", "is not a valid URL"),
        ("api_url", "   ", "must be an http(s) URL"),
        ("api_url", "https://hub.example/#top", "must not have a query or fragment (use https://hub.example)"),
        (
            "api_url",
            "https://[2001:db8::1]:8443/?k=v",
            "must not have a query or fragment (use https://[2001:db8::1]:8443)",
        ),
        ("shutdown_timeout", "soon", "must be a number of seconds from 0 to 60"),
        ("shutdown_timeout", float("nan"), "must be a number of seconds from 0 to 60"),
        ("dedup_url", "", "must be a redis://, rediss:// or unix:// URL"),
        ("dedup_url", 5, "must be a redis://, rediss:// or unix:// URL"),
        ("dedup_url", "unix://", "needs the socket path, as in unix:///run/redis.sock"),
        ("celery_queue", "q" * 201, "must be a queue name of 1-200 printable characters"),
        ("celery_queue", "orders\nlow", "must be a queue name of 1-200 printable characters"),
        ("kept_query_params", 5, "must be query parameter names"),
        ("cart_endpoints", b"/cart", "must be a list of regular expressions"),
        ("cart_endpoints", {"/cart": 1}, "must be a list of regular expressions"),
    ],
)
def test_a_bad_value_is_named_with_what_is_wanted(name: str, value: object, said: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make(**{name: value})
    assert str(info.value).startswith(f"{name}: {said}")


def test_flags_and_timeouts_read_as_written_in_an_environment() -> None:
    assert make(console_log=1).console_log is True and make(console_log=" On ").console_log is True
    assert make(console_log="").console_log is False and make(console_log=0).console_log is False
    assert make(shutdown_timeout=" 2.5 ").shutdown_timeout == 2.5
    assert make(celery_queue=None).celery_queue == ""  # Celery routes the task


def test_settings_cannot_be_changed_in_place() -> None:
    settings = make()
    with pytest.raises(AttributeError, match="use settings.replace"):
        settings.site_id = "other"
    with pytest.raises(AttributeError, match="immutable"):
        del settings.site_id
    assert settings.replace(site_id="other").site_id == "other" and settings.site_id != "other"


def test_an_unknown_option_far_from_any_setting_is_answered_with_the_list() -> None:
    with pytest.raises(ConfigurationError) as info:
        LayerSync(make(), zzzzqq=1)
    message = str(info.value)
    assert message.startswith("zzzzqq: is not a LayerSync setting (known: allow_insecure_http, api_url, ")
    assert all(name in message for name in ("site_id", "secret_key", "matcher"))
