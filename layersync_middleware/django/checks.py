"""Django system checks: LayerSync settings show up in ``manage.py check``.

- layersync.E001 (error): a setting is invalid (or, with ``strict``, missing).
- layersync.W001: the middleware is installed but can pair nothing (``sdk_rules`` off
  and no ``matcher``).
- layersync.W002: LayerSync is configured but the middleware is not in ``MIDDLEWARE``.
- layersync.W003: the site id or secret key is not set, so tracking is disabled. A
  warning, not an error: a checkout without credentials (CI, a new developer's
  machine) must still pass ``manage.py check`` and run its tests.
- layersync.E002 (error): ``sender="celery"`` and no Celery app to publish with.
- layersync.W004: ``sender="celery"`` and the tasks go to a queue that is not the Celery
  app's default: ``celery -A proj worker`` would not consume it (the hint gives the -Q).
- layersync.W005: ``CELERY_BROKER_URL`` overrides the broker the Celery app names.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from .._settings import ConfigurationError, Settings, describe
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
    if settings.enabled and settings.sender == "celery":
        messages += _check_celery(settings)
    return messages


def _check_celery(settings: Settings) -> list[CheckMessage]:
    from .. import celery  # the [celery] extra: chosen by sender="celery"

    try:
        app = celery.find_app(settings)
    except ConfigurationError as exc:
        named = exc.renamed(conf.spell("celery_app"))
        return [
            Error(
                str(named),
                hint="Import your Celery app in proj/__init__.py, as Celery's Django guide does.",
                id="layersync.E002",
            )
        ]
    messages: list[CheckMessage] = []
    queue, default = celery.queue_name(app, settings), str(app.conf.task_default_queue)
    if queue != default:
        messages.append(
            Warning(
                f"LayerSync's Celery tasks go to the queue {queue!r}, "
                f"which `celery -A {app.main} worker` does not consume.",
                hint=f"Start the workers with `celery -A {app.main} worker -Q {default},{queue}`, "
                f"or remove {conf.spell('celery_queue')}.",
                id="layersync.W004",
            )
        )
    override = celery.env_override(app)
    if override:
        messages.append(
            Warning(override, hint="Give the web processes and the workers the same broker.", id="layersync.W005")
        )
    return messages
