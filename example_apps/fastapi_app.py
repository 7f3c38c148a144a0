"""FastAPI shop. Run: LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... uvicorn example_apps.fastapi_app:app"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from example_apps import _shop
from layersync_middleware import LayerSyncMiddleware, current_event

app = FastAPI()
# Site id, secret key and hub URL come from LAYERSYNC_* environment variables.
app.add_middleware(LayerSyncMiddleware, matcher=_shop.MATCHER)


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return _shop.page()


@app.get(_shop.LOCAL_SDK)
async def browser_sdk() -> Response:
    path = _shop.browser_sdk_file()
    return FileResponse(path) if path else Response(status_code=404)


@app.post("/api/cart/add")
async def cart_add(request: Request, fail: int = 0) -> JSONResponse:
    item = await request.json()
    pending = current_event()  # the paired event; enrich it with what only the server knows
    if pending is not None:
        pending.update(_shop.cart_props(item.get("item_id")))
    return JSONResponse({"ok": not fail}, status_code=500 if fail else 200)


@app.post("/api/checkout/start")
async def checkout_start() -> dict[str, bool]:
    return {"ok": True}


@app.post("/api/orders")
async def create_order(request: Request, fail: int = 0) -> JSONResponse:
    if fail:
        return JSONResponse({"error": "payment declined"}, status_code=402)
    order = await request.json()
    order_id, total = _shop.new_order_id(), _shop.order_total(order.get("items", []))
    pending = current_event()
    if pending is not None:
        pending.update(order_id=order_id, value=total, currency="USD")
        pending.identify(email=order.get("email"))
    return JSONResponse({"order_id": order_id, "value": total}, status_code=201)
