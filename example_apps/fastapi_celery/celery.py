"""The Celery app, its broker in code. ``include`` registers LayerSync's task on it."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]  # Celery ships no types

from layersync_middleware.celery import drain_on_celery_shutdown

app = Celery(
    "shop",
    broker=os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/1"),
    include=["layersync_middleware.celery"],
)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,  # a prefork child takes one task at a time
    # A worker killed mid-task gives its message back within a minute, not Redis' default hour.
    broker_transport_options={"visibility_timeout": 60},
)
drain_on_celery_shutdown()  # events your own tasks track are delivered before a worker process ends
