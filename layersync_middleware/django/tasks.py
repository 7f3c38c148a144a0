"""The LayerSync ``deliver`` task, for Celery's ``app.autodiscover_tasks()``: with
``"layersync_middleware.django"`` in ``INSTALLED_APPS``, ``celery -A proj worker``
runs it with no extra flag (Celery imports ``<app>.tasks`` of every installed app)."""

from __future__ import annotations

from ..celery import deliver

__all__ = ["deliver"]
