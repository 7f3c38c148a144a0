"""A WSGI app for gunicorn: ``/track`` tracks one purchase and answers "<pid> <event id>"."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from layersync_middleware import LayerSync

ls = LayerSync.from_env()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"ok"
    if environ.get("PATH_INFO") == "/track":
        body = f"{os.getpid()} {ls.track('purchase', {'worker': os.getpid()})}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
