"""One resolved, validated, immutable settings object.

Settings come from keyword arguments, the environment (``LAYERSYNC_*``), Flask's
``app.config`` or Django's ``settings.LAYERSYNC``. Whatever the source, a bad value
fails at start-up with :class:`ConfigurationError` naming the setting the way that
source spells it, and the secret key is never echoed.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from . import _wire
from ._match import Matcher, MatcherSpec, parse_matcher_env

SenderKind = Literal["thread", "asyncio", "sync"]
_SENDERS: tuple[SenderKind, ...] = ("thread", "asyncio", "sync")


class ConfigurationError(ValueError):
    """A setting is missing or wrong. ``setting`` is its name as the source spells it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")

    def renamed(self, setting: str) -> ConfigurationError:
        return ConfigurationError(setting, self.problem)


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
    "console_log": "LAYERSYNC_CONSOLE_LOG",
    "trust_proxy": "LAYERSYNC_TRUST_PROXY",
    "timeout_ms": "LAYERSYNC_TIMEOUT_MS",
    "max_retries": "LAYERSYNC_MAX_RETRIES",
    "matcher": "LAYERSYNC_MATCHER",
    "max_queue_size": "LAYERSYNC_MAX_QUEUE_SIZE",
    "sender": "LAYERSYNC_SENDER",
    "shutdown_timeout": "LAYERSYNC_SHUTDOWN_TIMEOUT",
}
# Accepted too, for people who name the variable after the setting.
_ENV_ALIASES = {"LAYERSYNC_SECRET_KEY": "secret_key"}

_INT_RANGES: dict[str, tuple[int, int]] = {
    "trust_proxy": (0, 32),
    "timeout_ms": (100, 120_000),
    "max_retries": (0, 10),
    "max_queue_size": (1, 1_000_000),
}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
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


def _check_site_id(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigurationError("site_id", "must be a positive number or a non-empty id string")
        return value
    if isinstance(value, str):
        v = value.strip()
        if v and len(v) <= 128 and all((c.isalnum() and c.isascii()) or c in "_-." for c in v):
            return v
        raise ConfigurationError("site_id", "must be 1-128 characters of letters, digits, '_', '-' or '.'")
    if value is None:
        raise ConfigurationError("site_id", "is required (the site id from your LayerSync dashboard)")
    raise ConfigurationError("site_id", "must be a string or a positive number")


def _check_secret_key(value: object) -> SecretKey:
    # Messages here never include the value, not even a part of it.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigurationError("secret_key", "is required (the secret key 'sk_...' from your LayerSync dashboard)")
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
    if not v.startswith(_wire.SECRET_KEY_PREFIX):
        raise ConfigurationError("secret_key", "must be a secret key starting with 'sk_'")
    if len(v) > 512 or not v.isascii() or not v.isprintable() or " " in v:
        raise ConfigurationError("secret_key", "contains characters a key cannot have")
    return SecretKey(v)


def _check_api_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("api_url", "must be an http(s) URL")
    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise ConfigurationError("api_url", f"is not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError("api_url", f"must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError("api_url", "must not carry credentials; the secret key goes in secret_key")
    if parts.query or parts.fragment:
        raise ConfigurationError("api_url", f"must not have a query or fragment, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigurationError(
            "api_url", f"must use https; plain http is allowed only for loopback hosts, got {url!r}"
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


class Settings:
    """Validated LayerSync settings. Immutable; compare and hash by value.

    ``Settings(site_id=..., secret_key=...)`` validates at once; use
    :meth:`from_env` to read ``LAYERSYNC_*`` environment variables.
    """

    __slots__ = (
        "api_url",
        "console_log",
        "enabled",
        "matcher",
        "max_queue_size",
        "max_retries",
        "secret_key",
        "sender",
        "shutdown_timeout",
        "site_id",
        "timeout_ms",
        "trust_proxy",
    )

    site_id: str | int
    secret_key: SecretKey
    api_url: str
    enabled: bool
    console_log: bool
    trust_proxy: int
    timeout_ms: int
    max_retries: int
    matcher: Matcher
    max_queue_size: int
    sender: SenderKind
    shutdown_timeout: float

    def __init__(
        self,
        *,
        site_id: str | int | None = None,
        secret_key: str | SecretKey | None = None,
        api_url: str = _wire.DEFAULT_API_URL,
        enabled: bool | str = True,
        console_log: bool | str = False,
        trust_proxy: int | str = 0,
        timeout_ms: int | str = 5000,
        max_retries: int | str = 2,
        matcher: MatcherSpec | Matcher | None = None,
        max_queue_size: int | str = 1000,
        sender: str = "thread",
        shutdown_timeout: float | str = 2.0,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "enabled", _check_bool("enabled", enabled))
        if self.enabled or site_id is not None:
            set_(self, "site_id", _check_site_id(site_id))
        else:
            set_(self, "site_id", "")
        if self.enabled or secret_key is not None:
            set_(self, "secret_key", _check_secret_key(secret_key))
        else:
            set_(self, "secret_key", SecretKey(""))
        set_(self, "api_url", _check_api_url(api_url))
        set_(self, "console_log", _check_bool("console_log", console_log))
        for name, value in (
            ("trust_proxy", trust_proxy),
            ("timeout_ms", timeout_ms),
            ("max_retries", max_retries),
            ("max_queue_size", max_queue_size),
        ):
            set_(self, name, _check_int(name, value))
        if isinstance(matcher, Matcher):
            set_(self, "matcher", matcher)
        else:
            try:
                if isinstance(matcher, str):  # "/a/*, /b/*=purchase", as in LAYERSYNC_MATCHER
                    matcher = parse_matcher_env(matcher)
                set_(self, "matcher", Matcher(matcher or ()))
            except ValueError as exc:
                raise ConfigurationError("matcher", str(exc)) from None
        if sender not in _SENDERS:
            raise ConfigurationError("sender", f"must be one of {', '.join(_SENDERS)}, got {sender!r}")
        set_(self, "sender", sender)
        set_(self, "shutdown_timeout", _check_timeout("shutdown_timeout", shutdown_timeout))

    # -- alternative sources -----------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``LAYERSYNC_*`` variables, then ``overrides`` on top.

        Unknown ``LAYERSYNC_*`` variables are ignored: the environment is shared with
        other programs (a front-end build may read ``LAYERSYNC_PUBLISHABLE_KEY``).
        """
        options, names = _env_options(environ)
        return cls._build(options, names, overrides)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        *,
        name_of: Mapping[str, str],
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from a framework's config: ``mapping`` is keyed by field name and
        ``name_of`` says how the framework spells each one, for error messages. Values
        missing from ``mapping`` fall back to the environment."""
        base = _env_options(environ)
        options = {**base[0], **mapping}
        names = {**base[1], **{k: name_of.get(k, k) for k in mapping}}
        return cls._build(options, names, overrides)

    @classmethod
    def _build(cls, options: dict[str, Any], names: dict[str, str], overrides: Mapping[str, Any]) -> Settings:
        check_unknown(sorted(options), names)
        check_unknown(sorted(overrides), {})
        merged = {**options, **overrides}
        for key in overrides:
            names.pop(key, None)
        try:
            return cls(**merged)
        except ConfigurationError as exc:
            raise exc.renamed(names.get(exc.setting, exc.setting)) from None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """``Settings(**options)``, refusing an unknown option with a suggestion."""
        check_unknown(sorted(options), {})
        return cls(**options)

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
        parts = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Settings({parts})"


def _env_options(environ: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    names: dict[str, str] = {}
    for field, var in ENV_NAMES.items():
        if var in env:
            options[field], names[field] = env[var], var
    for var, field in _ENV_ALIASES.items():
        if var in env and field not in options:
            options[field], names[field] = env[var], var
    if "matcher" in options:
        try:
            options["matcher"] = parse_matcher_env(options["matcher"])
        except ValueError as exc:
            raise ConfigurationError(names["matcher"], str(exc)) from None
    return options, names


def _unknown_message(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), Settings.__slots__, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"is not a LayerSync setting{hint} (known: {', '.join(Settings.__slots__)})"


def check_unknown(keys: Iterable[str], spell: Mapping[str, str]) -> None:
    """Refuse keys that are not settings; ``spell`` maps a key to its display name."""
    for key in keys:
        if key not in Settings.__slots__:
            raise ConfigurationError(spell.get(key, key), _unknown_message(key))
