"""A Flask app whose paired events go through Celery (``LAYERSYNC_SENDER=celery``)."""

from __future__ import annotations

from typing import Any

from flask import Flask

import example_apps.celery_app  # noqa: F401  (the hand-off publishes through this Celery app)
from fleet import shop
from layersync_middleware import LayerSync, LayerSyncWSGIMiddleware

client = LayerSync.from_env(matcher=shop.MATCHER)
app = Flask(__name__)
app.wsgi_app = LayerSyncWSGIMiddleware(app.wsgi_app, client=client)  # type: ignore[method-assign]


@app.get("/")
def index() -> dict[str, bool]:
    return {"ok": True}


@app.post("/api/cart/add")
def cart_add() -> dict[str, Any]:
    return shop.answer()


@app.get("/state")
def state() -> dict[str, Any]:
    return shop.state(client)
