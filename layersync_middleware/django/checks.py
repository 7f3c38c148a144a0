"""Django system checks: bad LayerSync settings show up in ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from .._settings import ConfigurationError
from . import conf

MIDDLEWARE_PATH = "layersync_middleware.django.LayerSyncMiddleware"


@register()
def check_layersync(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        settings, _, _ = conf.read()
    except ConfigurationError as exc:
        return [Error(str(exc), hint="Fix the LAYERSYNC setting or the LAYERSYNC_* variables.", id="layersync.E001")]
    messages: list[CheckMessage] = []
    installed = MIDDLEWARE_PATH in getattr(django_settings, "MIDDLEWARE", [])
    if installed and settings.enabled and not settings.matcher:
        messages.append(
            Warning(
                "LayerSyncMiddleware is installed but LAYERSYNC['matcher'] is empty, so it pairs nothing.",
                hint="Set LAYERSYNC['matcher'], e.g. ['/api/cart/*', '/api/orders/*'].",
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
