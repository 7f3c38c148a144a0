"""The Celery app of a shop that delivers its LayerSync events through Celery.

Copy it to your project (say ``shop/celery_app.py``) and run one worker, or more, with
the same ``LAYERSYNC_*`` settings as the web processes (the worker reads the site id,
secret key and hub URL itself: only a fingerprint of the key travels through the broker)::

    export CELERY_BROKER_URL=redis://127.0.0.1:6379/0
    export LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_...
    celery -A shop.celery_app worker

The web processes set ``LAYERSYNC_SENDER=celery`` and import this module before they make
their LayerSync client (``import shop.celery_app`` next to the app's other imports): the
hand-off publishes with the app it creates, on the app's default queue.
"""

from __future__ import annotations

import logging
import os

from celery import Celery  # type: ignore[import-untyped]  # Celery ships no types

import layersync_middleware.celery as layersync_celery

app = Celery(
    "shop",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    # Registers layersync_middleware.celery.deliver on this app (it is a shared task).
    include=["layersync_middleware.celery"],
)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    # A worker killed mid-task gives its message back within a minute, not Redis' default hour.
    broker_transport_options={"visibility_timeout": 60},
    # A prefork child takes one task at a time and does not hoard the queue's messages.
    worker_prefetch_multiplier=1,
)


def _dropped(event: dict[str, object], reason: str) -> None:
    # Runs in the worker for each event the deliver task gives up on: alert, or store it.
    logging.getLogger("shop").error("LayerSync event %s dropped: %s", event.get("event_id"), reason)


layersync_celery.set_on_drop(_dropped)
# Your own tasks may track events too: deliver them before each worker process ends.
layersync_celery.drain_on_celery_shutdown()
