"""A Celery app on kombu's filesystem transport (no broker server): the task tracks a
purchase. The worker drains on each child's exit (``drain_on_celery_shutdown``)."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from layersync_middleware import LayerSync
from layersync_middleware._delivery.lifecycle import drain_on_celery_shutdown

folder = os.environ["BROKER_DIR"]
app = Celery("durable", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": folder,
        "data_folder_out": folder,
        "processed_folder": os.path.join(folder, "processed"),
        "control_folder": os.path.join(folder, "control"),  # not ./control in the checkout
        "store_processed": False,
        "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
ls = LayerSync.from_env()
drain_on_celery_shutdown()


@app.task(name="track_purchase")  # type: ignore[untyped-decorator]  # Celery ships no types
def track_purchase(n: int) -> None:
    ls.track("purchase", {"n": n}, event_id=f"celery-order-{n:04d}")
