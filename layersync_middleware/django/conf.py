"""``settings.LAYERSYNC`` -> :class:`~layersync_middleware.Settings`, read when asked
(so ``override_settings`` works in tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from .._pairing import Consent, IsSuccess
from .._settings import ConfigurationError, Settings, disable_or_raise

SETTING = "LAYERSYNC"
_HOOKS = ("consent", "is_success")


def _spell(key: str) -> str:
    return f"{SETTING}[{key!r}]"


def spell(key: str) -> str:
    """How ``settings.LAYERSYNC`` spells a setting (in the case of the keys it has)."""
    given = raw()
    upper = bool(given) and all(str(k).isupper() for k in given)
    return _spell(next((str(k) for k in given if str(k).lower() == key), key.upper() if upper else key))


def raw() -> dict[str, Any]:
    value = getattr(django_settings, SETTING, {})
    if not isinstance(value, dict):
        raise ConfigurationError(SETTING, "must be a dict, e.g. LAYERSYNC = {'matcher': ['/api/cart/*']}")
    return value


def read() -> tuple[Settings, Consent | None, IsSuccess | None]:
    """The settings and the two hooks; raises ConfigurationError naming the key."""
    given = raw()
    options = {str(k).lower(): v for k, v in given.items()}
    spelled = {str(k).lower(): str(k) for k in given}
    # Name a setting the user did not write in the case of the ones they did.
    upper = bool(given) and all(str(k).isupper() for k in given)

    def spell(field: str) -> str:
        return _spell(spelled.get(field) or (field.upper() if upper else field))

    hooks = {name: _hook(options.pop(name, None), spell(name)) for name in _HOOKS}
    settings = Settings.from_mapping(options, spell=spell)
    return settings, hooks["consent"], hooks["is_success"]


def load() -> tuple[Settings, Consent | None, IsSuccess | None]:
    """What the middleware uses: :func:`read`, except that missing credentials give
    disabled settings and one error log naming the key to set, so that the site keeps
    serving. Invalid settings raise (the middleware is built at start-up, and
    ``manage.py check`` reports them as layersync.E001); so does any problem with
    ``LAYERSYNC['strict']`` set."""
    try:
        return read()
    except ConfigurationError as exc:
        return disable_or_raise(exc, raise_invalid=True), None, None


def _hook(value: Any, name: str) -> Callable[..., bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ConfigurationError(name, f"cannot import {value!r}: {exc}") from None
    if not callable(value):
        raise ConfigurationError(name, "must be a callable or a dotted path to one")
    return value  # type: ignore[no-any-return]
