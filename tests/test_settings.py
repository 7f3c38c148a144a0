from __future__ import annotations

import logging
import pathlib
import pickle

import pytest

from layersync_middleware import ConfigurationError, LayerSync, Settings

KEY = "sk_live_0123456789abcdef"


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
    ["ftp://hub.example", "http://hub.example", "https://", "https://user:pw@hub.example", "https://h/?x=1", "nope"],
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
        s.timeout_ms = 1  # type: ignore[misc]
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


def test_unknown_client_and_middleware_options_suggest_the_setting() -> None:
    from layersync_middleware import LayerSyncMiddleware

    with pytest.raises(ConfigurationError, match="^timeout: .*did you mean 'timeout_ms'"):
        LayerSync(site_id="s", secret_key=KEY, timeout=5)
    with pytest.raises(ConfigurationError, match="^matchers: .*did you mean 'matcher'"):
        LayerSyncMiddleware(lambda *a: None, site_id="s", secret_key=KEY, matchers=["/x"])


def test_matcher_string_is_read_like_the_environment_variable() -> None:
    s = make(matcher="/api/cart/*, /api/orders=purchase")
    assert [r.pattern for r in s.matcher.rules] == ["/api/cart/*", "/api/orders"]
    assert s.matcher.rules[1].names == frozenset({"purchase"})


def test_new_settings_defaults_and_timeout_in_seconds() -> None:
    s = make(timeout_ms=2500)
    assert (s.strict, s.allow_insecure_http, s.spool_path, s.dedup_url) == (False, False, None, None)
    assert (s.celery_queue, s.default_phone_region) == ("layersync", None)
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
        ("LAYERSYNC_CELERY_QUEUE", ""),
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
