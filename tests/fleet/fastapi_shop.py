"""A FastAPI app whose paired events go through Celery (``LAYERSYNC_SENDER=celery``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import example_apps.celery_app  # noqa: F401  (the hand-off publishes through this Celery app)
from fleet import shop
from layersync_middleware import LayerSync, LayerSyncMiddleware

client = LayerSync.from_env(matcher=shop.MATCHER)
app = FastAPI()
app.add_middleware(LayerSyncMiddleware, client=client)


@app.get("/")
async def index() -> dict[str, bool]:
    return {"ok": True}


@app.post("/api/cart/add")
async def cart_add() -> dict[str, Any]:
    return shop.answer()


@app.get("/state")
async def state() -> dict[str, Any]:
    return shop.state(client)
