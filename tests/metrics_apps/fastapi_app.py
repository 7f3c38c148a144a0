"""FastAPI with the middleware and /metrics as the README mounts it (uvicorn)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from layersync_middleware import LayerSync, LayerSyncMiddleware
from layersync_middleware.metrics import render
from metrics_apps import ok, worker_stats

ls = LayerSync.from_env(matcher=["/api/cart/*"])
app = FastAPI()
app.add_middleware(LayerSyncMiddleware, client=ls)
app.get("/")(ok)
app.post("/api/cart/add")(ok)


@app.get("/metrics")
def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)


@app.get("/stats")
def stats() -> dict[str, Any]:
    return worker_stats(ls)
