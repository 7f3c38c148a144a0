"""Django system checks: LayerSync settings show up in ``manage.py check``.

- layersync.E001 (error): a setting is invalid (or, with ``strict``, missing).
- layersync.W001: the middleware is installed but can pair nothing (``sdk_rules`` off
  and no ``matcher``).
- layersync.W002: LayerSync is configured but the middleware is not in ``MIDDLEWARE``.
- layersync.W003: the site id or secret key is not set, so tracking is disabled. A
  warning, not an error: a checkout without credentials (CI, a new developer's
  machine) must still pass ``manage.py check`` and run its tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from .._settings import ConfigurationError, describe
from . import conf

MIDDLEWARE_PATH = "layersync_middleware.django.LayerSyncMiddleware"


@register()
def check_layersync(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        settings, _, _ = conf.read()
    except ConfigurationError as exc:
        if exc.missing and not exc.strict:
            return [
                Warning(
                    f"{describe(exc)}: LayerSync tracking is disabled.",
                    hint="Set it in LAYERSYNC or as a LAYERSYNC_* environment variable, "
                    "or set LAYERSYNC['enabled'] = False to turn tracking off.",
                    id="layersync.W003",
                )
            ]
        return [Error(str(exc), hint="Fix the LAYERSYNC setting or the LAYERSYNC_* variables.", id="layersync.E001")]
    messages: list[CheckMessage] = []
    installed = MIDDLEWARE_PATH in getattr(django_settings, "MIDDLEWARE", [])
    if installed and settings.enabled and not settings.matcher:
        messages.append(
            Warning(
                "LayerSyncMiddleware is installed but LAYERSYNC['sdk_rules'] is off and LAYERSYNC['matcher'] "
                "is empty, so it pairs nothing.",
                hint="Remove LAYERSYNC['sdk_rules'] to pair what the browser SDK stamps, "
                "or set LAYERSYNC['matcher'], e.g. {'/api/cart/*': ['add_to_cart']}.",
                id="layersync.W001",
            )
        )
    if settings.enabled and not installed:
        messages.append(
            Warning(
                "LAYERSYNC is configured but LayerSyncMiddleware is not in MIDDLEWARE.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE.",
                id="layersync.W002",
            )
        )
    return messages
