"""A plain WSGI shop, no framework.

Run: LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... gunicorn example_apps.wsgi_app:app
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from example_apps import _shop
from layersync_middleware import LayerSyncWSGIMiddleware, current_event


def _json(start_response: Callable[..., Any], status: str, doc: object) -> list[bytes]:
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def shop(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
    fail = "fail=1" in environ.get("QUERY_STRING", "")
    if method == "GET" and path == "/":
        body = _shop.page().encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    if method == "GET" and path == _shop.LOCAL_SDK and (sdk := _shop.browser_sdk_file()):
        start_response("200 OK", [("Content-Type", "text/javascript")])
        return environ["wsgi.file_wrapper"](sdk.open("rb"))  # type: ignore[no-any-return]
    if method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        doc = json.loads(environ["wsgi.input"].read(size) or b"{}")
        pending = current_event()
        if path == "/api/cart/add":
            if fail:
                return _json(start_response, "500 Internal Server Error", {"ok": False})
            if pending is not None:
                pending.update(_shop.cart_props(doc.get("item_id")))
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/api/checkout/start":
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/api/orders":
            if fail:
                return _json(start_response, "402 Payment Required", {"error": "payment declined"})
            order_id, total = _shop.new_order_id(), _shop.order_total(doc.get("items", []))
            if pending is not None:
                pending.update(order_id=order_id, value=total, currency="USD")
                pending.identify(email=doc.get("email"))
            return _json(start_response, "201 Created", {"order_id": order_id, "value": total})
    return _json(start_response, "404 Not Found", {"error": "not found"})


# Site id, secret key and hub URL come from LAYERSYNC_* environment variables.
app = LayerSyncWSGIMiddleware(shop, matcher=_shop.MATCHER)
