"""One resolved, validated, immutable settings object.

Settings come from keyword arguments, the environment (``LAYERSYNC_*``), Flask's
``app.config`` or Django's ``settings.LAYERSYNC``. Whatever the source, a bad value
fails at start-up with :class:`ConfigurationError` naming the setting the way that
source spells it, and the secret key is never echoed.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from . import _wire
from ._log import log_always
from ._match import Matcher, MatcherSpec, parse_matcher_env
from ._wire import DEFAULT_RULES, EndpointRules, EndpointSpec, compile_endpoint

SenderKind = Literal["thread", "asyncio", "sync", "celery"]
_SENDERS: tuple[SenderKind, ...] = ("thread", "asyncio", "sync", "celery")
MetricsKind = Literal["prometheus", "otel"]
# metrics backend -> (the module it needs, the extra that installs it)
_METRICS: dict[str, tuple[str, str]] = {
    "prometheus": ("prometheus_client", "prometheus"),
    "otel": ("opentelemetry.metrics", "otel"),
}


class ConfigurationError(ValueError):
    """A setting is missing or wrong.

    ``setting`` is its name as the source spells it (``LAYERSYNC_SITE_ID``,
    ``LAYERSYNC['site_id']``, the keyword...); ``settings`` lists every name involved
    when several are (both credentials missing). ``missing`` is True when the problem
    is an absent required credential, which adapters treat as "tracking disabled"
    rather than as a crash (see :func:`settings_or_disabled`). ``strict`` is True when
    the settings themselves asked for a hard failure.
    """

    def __init__(
        self, setting: str | Sequence[str], problem: str, *, missing: bool = False, mentions: Sequence[str] = ()
    ) -> None:
        self.settings: tuple[str, ...] = (setting,) if isinstance(setting, str) else tuple(setting)
        self.setting = self.settings[0]
        # ``problem`` may name other settings as ``{name}``: they are spelled like ``setting``.
        self._template = problem
        self._mentions = tuple(mentions)
        self.problem = problem.format_map({m: m for m in mentions}) if mentions else problem
        self.missing = missing
        self.strict = False
        super().__init__(f"{' and '.join(self.settings)}: {self.problem}")

    def respelled(self, spell: Callable[[str], str]) -> ConfigurationError:
        """The same error, each setting it names spelled by ``spell(name)``."""
        new = ConfigurationError([spell(s) for s in self.settings], self._template, missing=self.missing)
        if self._mentions:
            new.problem = self._template.format_map({m: spell(m) for m in self._mentions})
            new.args = (f"{' and '.join(new.settings)}: {new.problem}",)
        new.strict = self.strict
        return new

    def renamed(self, setting: str) -> ConfigurationError:
        return self.respelled(lambda _: setting)


class SecretKey:
    """The secret key, kept out of every ``repr``, ``str`` and log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretKey('sk_********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # never pickled into a cache or a task queue by accident
        raise TypeError("SecretKey cannot be pickled")


# field name -> environment variable (and Flask config key)
ENV_NAMES: dict[str, str] = {
    "site_id": "LAYERSYNC_SITE_ID",
    "secret_key": "LAYERSYNC_SECRET",
    "api_url": "LAYERSYNC_API_URL",
    "enabled": "LAYERSYNC_ENABLED",
    "strict": "LAYERSYNC_STRICT",
    "console_log": "LAYERSYNC_CONSOLE_LOG",
    "trust_proxy": "LAYERSYNC_TRUST_PROXY",
    "timeout_ms": "LAYERSYNC_TIMEOUT_MS",
    "max_retries": "LAYERSYNC_MAX_RETRIES",
    "matcher": "LAYERSYNC_MATCHER",
    "sdk_rules": "LAYERSYNC_SDK_RULES",
    "cart_endpoints": "LAYERSYNC_CART_ENDPOINTS",
    "order_endpoints": "LAYERSYNC_ORDER_ENDPOINTS",
    "checkout_endpoints": "LAYERSYNC_CHECKOUT_ENDPOINTS",
    "pair_read_only": "LAYERSYNC_PAIR_READ_ONLY",
    "max_queue_size": "LAYERSYNC_MAX_QUEUE_SIZE",
    "sender": "LAYERSYNC_SENDER",
    "shutdown_timeout": "LAYERSYNC_SHUTDOWN_TIMEOUT",
    "allow_insecure_http": "LAYERSYNC_ALLOW_INSECURE_HTTP",
    "spool_path": "LAYERSYNC_SPOOL_PATH",
    "dedup_url": "LAYERSYNC_DEDUP_URL",
    "celery_queue": "LAYERSYNC_CELERY_QUEUE",
    "celery_app": "LAYERSYNC_CELERY_APP",
    "default_phone_region": "LAYERSYNC_DEFAULT_PHONE_REGION",
    "metrics": "LAYERSYNC_METRICS",
    "kept_query_params": "LAYERSYNC_KEPT_QUERY_PARAMS",
}
# Accepted too, for people who name the variable after the setting. The one place
# aliases live: the environment and Flask's config both read them from here.
ENV_ALIASES: dict[str, str] = {"LAYERSYNC_SECRET_KEY": "secret_key"}


def env_field(name: str) -> str | None:
    """The setting a ``LAYERSYNC_*`` variable (or Flask config key) sets, or None."""
    for field, var in ENV_NAMES.items():
        if var == name:
            return field
    return ENV_ALIASES.get(name)


def env_name(field: str) -> str:
    """How the environment spells a setting (also for unknown ones, in suggestions)."""
    return ENV_NAMES.get(field, f"LAYERSYNC_{field.upper()}")


_INT_RANGES: dict[str, tuple[int, int]] = {
    "trust_proxy": (0, 32),
    "timeout_ms": (100, 120_000),
    "max_retries": (0, 10),
    "max_queue_size": (1, 1_000_000),
}
_CREDENTIALS = {"site_id": "the site id", "secret_key": "the secret key 'sk_...'"}

_log = logging.getLogger("layersync")  # not ._log.logger: _log imports nothing of ours, keep it so
_unprefixed_key_warned = False


def _is_loopback(host: str) -> bool:
    # ``*.localhost`` names are loopback only by convention: here they go through DNS
    # and may resolve anywhere, so only ``localhost`` itself and literal IPs count.
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_int(name: str, value: object) -> int:
    lo, hi = _INT_RANGES[name]
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigurationError(name, f"must be a whole number from {lo} to {hi}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(name, f"must be a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise ConfigurationError(name, f"must be from {lo} to {hi}, got {value}")
    return value


def _check_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigurationError(name, "must be true or false (1/0, yes/no, on/off)")


def _is_blank(value: object) -> bool:
    # An empty variable (``LAYERSYNC_SITE_ID=`` from an unset ``${VAR}`` in compose) is missing.
    if isinstance(value, SecretKey):
        value = value.reveal()
    return value is None or (isinstance(value, str) and not value.strip())


def _check_site_id(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigurationError("site_id", "must be a positive number or a non-empty id string")
        return value
    if isinstance(value, str):
        v = value.strip()
        if len(v) <= 128 and all((c.isalnum() and c.isascii()) or c in "_-." for c in v):
            return v
        raise ConfigurationError("site_id", "must be 1-128 characters of letters, digits, '_', '-' or '.'")
    raise ConfigurationError("site_id", "must be a string or a positive number")


def _check_secret_key(value: object) -> SecretKey:
    # Messages here never include the value, not even a part of it.
    if isinstance(value, SecretKey):
        value = value.reveal()
    if not isinstance(value, str):
        raise ConfigurationError("secret_key", "must be a string")
    v = value.strip()
    if v.startswith(_wire.PUBLISHABLE_KEY_PREFIX):
        raise ConfigurationError(
            "secret_key",
            "is a publishable key (pk_...). Publishable keys are for browsers and can only "
            "send browser events; the server needs the secret key (sk_...)",
        )
    if len(v) > 512 or not v.isascii() or not v.isprintable() or " " in v:
        raise ConfigurationError("secret_key", "contains characters a key cannot have")
    if v and not v.startswith(_wire.SECRET_KEY_PREFIX):
        _warn_unprefixed_key()
    return SecretKey(v)


def _warn_unprefixed_key() -> None:
    # Keys issued without the prefix exist (the Node README's example has none), so
    # this is a hint, not an error; once per process, as settings are rebuilt often.
    global _unprefixed_key_warned
    if not _unprefixed_key_warned:
        _unprefixed_key_warned = True
        _log.warning(
            "The LayerSync secret key does not start with 'sk_'; using it as given. "
            "If the hub answers 401, copy the secret key from your LayerSync dashboard."
        )


def _url_origin(parts: SplitResult) -> str:
    # What an error may show of a URL: never the user info, path or query, where a
    # misplaced secret key or password would be.
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _check_api_url(value: object, allow_insecure_http: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("api_url", "must be an http(s) URL")
    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise ConfigurationError("api_url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError("api_url", "must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise ConfigurationError("api_url", "must not carry credentials; the secret key goes in secret_key")
    if parts.query or parts.fragment:
        raise ConfigurationError("api_url", f"must not have a query or fragment (use {_url_origin(parts)})")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(host):
        raise ConfigurationError(
            "api_url",
            f"must use https: over plain http to {_url_origin(parts)} the secret key would travel in "
            "clear. Plain http is allowed to loopback hosts; to send in clear elsewhere (a staging hub, "
            "a compose service), set {allow_insecure_http} to true",
            mentions=("allow_insecure_http",),
        )
    return url


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigurationError(name, "must be a number of seconds from 0 to 60") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(name, "must be a number of seconds from 0 to 60")
    if not 0 <= value <= 60:
        raise ConfigurationError(name, f"must be from 0 to 60 seconds, got {value}")
    return float(value)


def _check_spool_path(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigurationError("spool_path", "must be a file path (a string or os.PathLike)")
    return value


_DEDUP_SCHEMES = ("redis", "rediss", "unix")


def mask_url(url: str) -> str:
    """``url`` with its password (user info or ``?password=``) replaced by stars."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{user}:********@{host}")
        if parts.query:
            query = [(k, "********" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)]
            parts = parts._replace(query=urlencode(query, safe="*"))
        return urlunsplit(parts)
    except ValueError:
        return "<unparsable URL>"


def _check_dedup_url(value: object) -> str | None:
    # Errors name the problem, never the URL: it may carry the Redis password.
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("dedup_url", "must be a redis://, rediss:// or unix:// URL")
    url = value.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ConfigurationError("dedup_url", "is not a valid URL (check the port)") from None
    if parts.scheme not in _DEDUP_SCHEMES:
        raise ConfigurationError("dedup_url", "must be a redis://, rediss:// or unix:// URL")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigurationError("dedup_url", "needs the socket path, as in unix:///run/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError("dedup_url", "needs a host, as in redis://localhost:6379/0")
    return url


def _check_celery_queue(value: object) -> str:
    # "" (the default): Celery routes the task (task_routes, else the app's default queue).
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        raise ConfigurationError("celery_queue", "must be a queue name of 1-200 printable characters")
    return value.strip()


def _check_celery_app(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().replace(":", ".").replace("_", "a").replace(".", "").isalnum():
        return value.strip()
    raise ConfigurationError("celery_app", "must be the dotted path of your Celery app, as in 'proj.celery:app'")


def _check_region(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        v = value.strip().upper()
        if len(v) == 2 and v.isascii() and v.isalpha():
            return v
    raise ConfigurationError("default_phone_region", "must be a two-letter ISO 3166 country code, like 'US' or 'FR'")


def _check_metrics(value: object) -> MetricsKind | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    kind = value.strip().lower() if isinstance(value, str) else value
    if kind not in _METRICS:
        raise ConfigurationError("metrics", f"must be prometheus or otel (or off), got {_short(value)}")
    module, extra = _METRICS[kind]
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        raise ConfigurationError(
            "metrics",
            f"is {kind}, but {module} is not installed: install the [{extra}] extra "
            f'(pip install "./layersync-middleware[{extra}]")',
        )
    return kind  # type: ignore[return-value]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: The query parameters an event's page URL keeps: the ones ad platforms attribute with.
#: Any other (``?email=``, a reset token, a session id) is cut before the event leaves memory.
KEPT_QUERY_PARAMS: tuple[str, ...] = (
    "utm_*",
    "fbclid",
    "gclid",
    "gbraid",
    "wbraid",
    "gclsrc",
    "dclid",
    "msclkid",
    "ttclid",
    "twclid",
    "li_fat_id",
    "epik",
    "ScCid",
    "rdt_cid",
)
_PARAM_RE = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}\*?")


def _check_kept_query_params(value: object) -> tuple[str, ...]:
    problem = "must be query parameter names, comma-separated (a trailing * keeps a prefix: utm_*), or none"
    if isinstance(value, str):
        value = [] if value.strip().lower() in ("", "none") else value.split(",")
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError("kept_query_params", problem)
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _PARAM_RE.fullmatch(name.strip()):
            raise ConfigurationError("kept_query_params", problem)
        names.append(name.strip())
    return tuple(dict.fromkeys(names))


class Settings:
    """Validated LayerSync settings. Immutable; compare and hash by value.

    ``Settings(site_id=..., secret_key=...)`` validates at once; use
    :meth:`from_env` to read ``LAYERSYNC_*`` environment variables.
    """

    __slots__ = (
        "allow_insecure_http",
        "api_url",
        "cart_endpoints",
        "celery_app",
        "celery_queue",
        "checkout_endpoints",
        "console_log",
        "dedup_url",
        "default_phone_region",
        "enabled",
        "kept_query_params",
        "matcher",
        "max_queue_size",
        "max_retries",
        "metrics",
        "order_endpoints",
        "pair_read_only",
        "sdk_rules",
        "secret_key",
        "sender",
        "shutdown_timeout",
        "site_id",
        "spool_path",
        "strict",
        "timeout_ms",
        "trust_proxy",
    )

    site_id: str | int
    secret_key: SecretKey
    api_url: str
    enabled: bool
    strict: bool
    console_log: bool
    trust_proxy: int
    timeout_ms: int
    max_retries: int
    matcher: Matcher
    sdk_rules: bool
    cart_endpoints: tuple[EndpointSpec, ...]
    order_endpoints: tuple[EndpointSpec, ...]
    checkout_endpoints: tuple[EndpointSpec, ...]
    pair_read_only: bool
    max_queue_size: int
    sender: SenderKind
    shutdown_timeout: float
    allow_insecure_http: bool
    spool_path: str | None
    dedup_url: str | None
    celery_queue: str
    celery_app: str | None
    default_phone_region: str | None
    metrics: MetricsKind | None
    kept_query_params: tuple[str, ...]

    def __init__(
        self,
        *,
        site_id: str | int | None = None,
        secret_key: str | SecretKey | None = None,
        api_url: str = _wire.DEFAULT_API_URL,
        enabled: bool | str = True,
        strict: bool | str = False,
        console_log: bool | str = False,
        trust_proxy: int | str = 0,
        timeout_ms: int | str = 5000,
        max_retries: int | str = 2,
        matcher: MatcherSpec | Matcher | None = None,
        sdk_rules: bool | str = True,
        cart_endpoints: Iterable[EndpointSpec] | str = (),
        order_endpoints: Iterable[EndpointSpec] | str = (),
        checkout_endpoints: Iterable[EndpointSpec] | str = (),
        pair_read_only: bool | str = False,
        max_queue_size: int | str = 10_000,
        sender: str = "thread",
        shutdown_timeout: float | str = 2.0,
        allow_insecure_http: bool | str = False,
        spool_path: str | os.PathLike[str] | None = None,
        dedup_url: str | None = None,
        celery_queue: str = "",
        celery_app: str | None = None,
        default_phone_region: str | None = None,
        metrics: str | None = None,
        kept_query_params: str | Iterable[str] = KEPT_QUERY_PARAMS,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "strict", _check_bool("strict", strict))
        try:
            set_(self, "enabled", _check_bool("enabled", enabled))
            self._set_credentials(site_id, secret_key)
            set_(self, "allow_insecure_http", _check_bool("allow_insecure_http", allow_insecure_http))
            set_(self, "api_url", _check_api_url(api_url, self.allow_insecure_http))
            set_(self, "console_log", _check_bool("console_log", console_log))
            for name, value in (
                ("trust_proxy", trust_proxy),
                ("timeout_ms", timeout_ms),
                ("max_retries", max_retries),
                ("max_queue_size", max_queue_size),
            ):
                set_(self, name, _check_int(name, value))
            self._set_matcher(matcher, sdk_rules, cart_endpoints, order_endpoints, checkout_endpoints)
            set_(self, "pair_read_only", _check_bool("pair_read_only", pair_read_only))
            if sender not in _SENDERS:
                raise ConfigurationError("sender", f"must be one of {', '.join(_SENDERS)}, got {sender!r}")
            set_(self, "sender", sender)
            set_(self, "shutdown_timeout", _check_timeout("shutdown_timeout", shutdown_timeout))
            set_(self, "spool_path", _check_spool_path(spool_path))
            set_(self, "dedup_url", _check_dedup_url(dedup_url))
            set_(self, "celery_queue", _check_celery_queue(celery_queue))
            set_(self, "celery_app", _check_celery_app(celery_app))
            set_(self, "default_phone_region", _check_region(default_phone_region))
            set_(self, "metrics", _check_metrics(metrics))
            set_(self, "kept_query_params", _check_kept_query_params(kept_query_params))
        except ConfigurationError as exc:
            exc.strict = self.strict
            raise

    def _set_credentials(self, site_id: object, secret_key: object) -> None:
        set_ = object.__setattr__
        if not self.enabled and _is_blank(site_id) and _is_blank(secret_key):
            set_(self, "site_id", "")
            set_(self, "secret_key", SecretKey(""))
            return
        missing = [name for name, value in (("site_id", site_id), ("secret_key", secret_key)) if _is_blank(value)]
        if self.enabled and missing:
            what = " and ".join(_CREDENTIALS[name] for name in missing)
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(missing, f"{verb} not set ({what} from your LayerSync dashboard)", missing=True)
        set_(self, "site_id", "" if _is_blank(site_id) else _check_site_id(site_id))
        set_(self, "secret_key", SecretKey("") if _is_blank(secret_key) else _check_secret_key(secret_key))

    def _set_matcher(self, matcher: object, sdk_rules: object, cart: object, order: object, checkout: object) -> None:
        set_ = object.__setattr__
        set_(self, "sdk_rules", _check_bool("sdk_rules", sdk_rules))
        endpoints: dict[str, tuple[EndpointSpec, ...]] = {}
        for name, value in (("cart_endpoints", cart), ("order_endpoints", order), ("checkout_endpoints", checkout)):
            endpoints[name] = _check_endpoints(name, value)
            set_(self, name, endpoints[name])
        # Without endpoints of the app's own: one rule set, and one cache, for every client.
        rules = EndpointRules(*endpoints.values()) if any(endpoints.values()) else DEFAULT_RULES
        set_(self, "matcher", _check_matcher(matcher).with_endpoints(rules, sdk=self.sdk_rules))

    @property
    def timeout(self) -> float:
        """``timeout_ms`` in seconds, as httpx and the senders take it."""
        return self.timeout_ms / 1000

    # -- alternative sources -----------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``LAYERSYNC_*`` variables, then ``overrides`` on top.

        Unknown ``LAYERSYNC_*`` variables are ignored: the environment is shared with
        other programs (a front-end build may read ``LAYERSYNC_PUBLISHABLE_KEY``).
        """
        options, names = _env_options(environ)
        return cls._build(options, names, env_name, overrides)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        *,
        spell: Callable[[str], str],
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from a framework's config. ``mapping`` is keyed by setting name and
        ``spell(name)`` says how the framework spells a setting (``LAYERSYNC['site_id']``),
        for errors and suggestions. Settings missing from ``mapping`` fall back to the
        environment."""
        env_options, env_names = _env_options(environ)
        options = {**env_options, **mapping}
        names = {**env_names, **{k: spell(k) for k in mapping}}
        return cls._build(options, names, spell, overrides)

    @classmethod
    def _build(
        cls,
        options: Mapping[str, Any],
        names: Mapping[str, str],
        spell: Callable[[str], str],
        overrides: Mapping[str, Any],
    ) -> Settings:
        # An override is named by its keyword; the rest as the source spells them.
        names = {k: v for k, v in names.items() if k not in overrides}

        def name(field: str) -> str:
            return names.get(field) or spell(field)

        merged = {**options, **overrides}
        strict = _peek_strict(merged.get("strict"))
        try:
            check_unknown(options, name)
            check_unknown(overrides)
        except ConfigurationError as exc:
            exc.strict = strict
            raise
        try:
            return cls(**merged)
        except ConfigurationError as exc:
            exc.strict = exc.strict or strict
            raise exc.respelled(lambda f: f if f in overrides else name(f)) from None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """``Settings(**options)``, refusing an unknown option with a suggestion."""
        return cls._build({}, {}, str, options)

    @classmethod
    def disabled(cls) -> Settings:
        """Settings that track nothing, for when configuration failed."""
        return cls(enabled=False)

    def replace(self, **changes: Any) -> Settings:
        current: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        current.update(changes)
        return Settings(**current)

    # -- value semantics ---------------------------------------------------------------
    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Settings are immutable; use settings.replace(...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Settings are immutable")

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            value = getattr(self, name)
            if name == "dedup_url" and value is not None:
                return repr(mask_url(value))
            return repr(value)

        return f"Settings({', '.join(f'{name}={shown(name)}' for name in self.__slots__)})"


def _check_matcher(matcher: object) -> Matcher:
    if isinstance(matcher, Matcher):
        return matcher
    try:
        if isinstance(matcher, str):  # "/a/*, /b/*=purchase", as in LAYERSYNC_MATCHER
            matcher = parse_matcher_env(matcher)
        return Matcher(matcher or ())  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError("matcher", str(exc)) from None


def _check_endpoints(name: str, value: object) -> tuple[EndpointSpec, ...]:
    """Regexes, as the browser SDK's ``cartEndpoints`` (...) take them; the environment
    separates them by whitespace (a regex rarely needs a space: write ``\\s``)."""
    if value is None:
        return ()
    specs = value.split() if isinstance(value, str) else value
    if isinstance(specs, (bytes, Mapping)) or not isinstance(specs, Iterable):
        raise ConfigurationError(name, "must be a list of regular expressions")
    checked: list[EndpointSpec] = []
    for spec in specs:
        try:
            compile_endpoint(spec)
        except ValueError as exc:
            raise ConfigurationError(name, str(exc)) from None
        checked.append(spec)
    return tuple(checked)


def _peek_strict(value: object) -> bool:
    try:
        return _check_bool("strict", value) if value is not None else False
    except ConfigurationError:
        return False


def _env_options(environ: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    names: dict[str, str] = {}
    for field, var in ENV_NAMES.items():
        if var in env:
            options[field], names[field] = env[var], var
    for var, field in ENV_ALIASES.items():
        if var in env and field not in options:
            options[field], names[field] = env[var], var
    return options, names


def _unknown_message(key: str, spell: Callable[[str], str]) -> str:
    import difflib

    close = difflib.get_close_matches(key.lower(), Settings.__slots__, n=1)
    if close:
        suggestion = spell(close[0])
        return f"is not a LayerSync setting; did you mean {suggestion if '[' in suggestion else repr(suggestion)}?"
    return f"is not a LayerSync setting (known: {', '.join(spell(s) for s in Settings.__slots__)})"


def check_unknown(keys: Iterable[str], spell: Callable[[str], str] | Mapping[str, str] = str) -> None:
    """Refuse keys that are not settings, naming each (and the suggestion) by ``spell``."""
    if isinstance(spell, Mapping):
        given = spell
        spell = lambda key: given.get(key, key)  # noqa: E731
    for key in sorted(keys):
        if key not in Settings.__slots__:
            raise ConfigurationError(spell(key), _unknown_message(key, spell))


def settings_or_disabled(
    build: Callable[[], Settings], *, strict: bool = False, raise_invalid: bool = False
) -> Settings:
    """``build()``, or disabled settings and one error log when it fails, so that
    tracking never takes the app down. See :func:`disable_or_raise`."""
    try:
        return build()
    except ConfigurationError as exc:
        return disable_or_raise(exc, strict=strict, raise_invalid=raise_invalid)


def disable_or_raise(exc: ConfigurationError, *, strict: bool = False, raise_invalid: bool = False) -> Settings:
    """Disabled settings after one ``ERROR`` on the ``layersync`` logger, or ``exc`` raised.

    Missing credentials disable. Invalid settings (a ``pk_`` key, a bad pattern) raise
    when ``raise_invalid`` (the adapter builds at start-up, where a crash is seen at
    once) and disable otherwise (built lazily, on a request, where a crash would
    answer 500 on every route). ``strict``, as an argument or a setting, always raises.
    """
    if strict or exc.strict or (raise_invalid and not exc.missing):
        raise exc
    log_always(_log, logging.ERROR, "%s: LayerSync tracking is disabled", describe(exc))
    return Settings.disabled()


def describe(exc: ConfigurationError) -> str:
    """One line for logs and checks: ``LAYERSYNC_SITE_ID is not set (the site id ...)``."""
    if exc.missing:
        return f"{' and '.join(exc.settings)} {exc.problem}"
    return str(exc)
