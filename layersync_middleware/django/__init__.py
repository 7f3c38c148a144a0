"""Django integration: ``MIDDLEWARE = [..., "layersync_middleware.django.LayerSyncMiddleware"]``
and ``LAYERSYNC = {...}`` in settings. Add ``"layersync_middleware.django"`` to
``INSTALLED_APPS`` for the system checks."""

from __future__ import annotations

from .middleware import LayerSyncMiddleware

__all__ = ["LayerSyncMiddleware"]
