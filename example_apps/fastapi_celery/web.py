"""The web process: imports the Celery app before it makes the LayerSync client, which
then publishes with it from its sender thread."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fastapi import FastAPI

from example_apps.fastapi_celery.celery import app as celery_app
from layersync_middleware import LayerSync, LayerSyncMiddleware

client = LayerSync.from_env(matcher=["/api/cart/*"], sender="celery")
app = FastAPI()
app.add_middleware(LayerSyncMiddleware, client=client)


@app.get("/")
async def index() -> dict[str, str]:
    return {"celery_app": celery_app.main}


@app.post("/api/cart/add")
async def cart_add() -> dict[str, Any]:
    return {"ok": True, "pid": os.getpid()}


@app.post("/api/order")
async def order() -> dict[str, Any]:
    return {"event_id": client.track("purchase", {"value": 9.5, "currency": "EUR"})}


@app.get("/state")
async def state() -> dict[str, Any]:
    return {"pid": os.getpid(), "stats": dataclasses.asdict(client.stats())}
