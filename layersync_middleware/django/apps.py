from __future__ import annotations

from django.apps import AppConfig


class LayerSyncConfig(AppConfig):
    name = "layersync_middleware.django"
    label = "layersync"
    verbose_name = "LayerSync"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
