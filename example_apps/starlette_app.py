"""Starlette shop. Run: LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... uvicorn example_apps.starlette_app:app"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from example_apps import _shop
from layersync_middleware import LayerSyncMiddleware, current_event


async def index(request: Request) -> Response:
    return HTMLResponse(_shop.page())


async def browser_sdk(request: Request) -> Response:
    path = _shop.browser_sdk_file()
    return FileResponse(path) if path else Response(status_code=404)


async def cart_add(request: Request) -> Response:
    item = await request.json()
    if request.query_params.get("fail"):
        return JSONResponse({"ok": False}, status_code=500)
    pending = current_event()
    if pending is not None:
        pending.update(_shop.cart_props(item.get("item_id")))
    return JSONResponse({"ok": True})


async def checkout_start(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def create_order(request: Request) -> Response:
    if request.query_params.get("fail"):
        return JSONResponse({"error": "payment declined"}, status_code=402)
    order = await request.json()
    order_id, total = _shop.new_order_id(), _shop.order_total(order.get("items", []))
    pending = current_event()
    if pending is not None:
        pending.update(order_id=order_id, value=total, currency="USD")
        pending.identify(email=order.get("email"))
    return JSONResponse({"order_id": order_id, "value": total}, status_code=201)


app = Starlette(
    routes=[
        Route("/", index),
        Route(_shop.LOCAL_SDK, browser_sdk),
        Route("/api/cart/add", cart_add, methods=["POST"]),
        Route("/api/checkout/start", checkout_start, methods=["POST"]),
        Route("/api/orders", create_order, methods=["POST"]),
    ],
    # Site id, secret key and hub URL come from LAYERSYNC_* environment variables.
    middleware=[Middleware(LayerSyncMiddleware, matcher=_shop.MATCHER)],
)
