"""Flask with the WSGI middleware and /metrics as the README mounts it (gunicorn -w 2)."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from layersync_middleware import LayerSync, LayerSyncWSGIMiddleware
from layersync_middleware.metrics import render
from metrics_apps import ok, worker_stats

ls = LayerSync.from_env(matcher=["/api/cart/*"])
app = Flask(__name__)
app.wsgi_app = LayerSyncWSGIMiddleware(app.wsgi_app, client=ls)  # type: ignore[method-assign]
app.add_url_rule("/", "index", ok)


@app.post("/api/cart/add")
def cart_add() -> dict[str, bool]:
    # A handler's own work (a database call): four clients at once keep both sync workers busy,
    # so that each serves some of the paired requests.
    time.sleep(0.01)
    return ok()


@app.get("/metrics")
def metrics() -> tuple[bytes, int, dict[str, str]]:
    body, content_type = render()
    return body, 200, {"Content-Type": content_type}


@app.get("/stats")
def stats() -> dict[str, Any]:
    return worker_stats(ls)
