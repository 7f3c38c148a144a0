"""A Celery app that does not know LayerSync's task (no include, no import): what a worker
does with a message for a task it does not have."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

app = Celery("bare", broker=os.environ["SHOP_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True
