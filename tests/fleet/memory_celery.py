"""A Celery app on the in-memory broker: named by ``celery_app`` where a test makes a
client with ``sender="celery"`` and sends nothing."""

from __future__ import annotations

from celery import Celery  # type: ignore[import-untyped]

app = Celery("memory", broker="memory://", set_as_current=False)
