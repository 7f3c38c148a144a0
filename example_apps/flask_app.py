"""Flask shop. Run: LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... gunicorn example_apps.flask_app:app"""

from __future__ import annotations

from flask import Flask, abort, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from example_apps import _shop
from layersync_middleware import current_event
from layersync_middleware.flask import FlaskLayerSync

app = Flask(__name__)
app.config["LAYERSYNC_MATCHER"] = _shop.MATCHER  # the rest from LAYERSYNC_* environment variables
layersync = FlaskLayerSync(app)


@app.get("/")
def index() -> ResponseReturnValue:
    return _shop.page()


@app.get(_shop.LOCAL_SDK)
def browser_sdk() -> ResponseReturnValue:
    path = _shop.browser_sdk_file()
    if path is None:
        abort(404)
    return send_file(path, mimetype="text/javascript")


@app.post("/api/cart/add")
def cart_add() -> ResponseReturnValue:
    item = request.get_json(silent=True) or {}
    if request.args.get("fail"):
        return jsonify(ok=False), 500
    pending = current_event()
    if pending is not None:
        pending.update(_shop.cart_props(item.get("item_id")))
    return jsonify(ok=True)


@app.post("/api/checkout/start")
def checkout_start() -> ResponseReturnValue:
    return jsonify(ok=True)


@app.post("/api/orders")
def create_order() -> ResponseReturnValue:
    if request.args.get("fail"):
        return jsonify(error="payment declined"), 402
    order = request.get_json(silent=True) or {}
    order_id, total = _shop.new_order_id(), _shop.order_total(order.get("items", []))
    pending = current_event()
    if pending is not None:
        pending.update(order_id=order_id, value=total, currency="USD")
        pending.identify(email=order.get("email"))
    return jsonify(order_id=order_id, value=total), 201


@app.post("/webhooks/payment")
def payment_webhook() -> ResponseReturnValue:
    # A server-authoritative event: no browser, PII hashed here before it leaves.
    body = request.get_json(silent=True) or {}
    layersync.client.track_with_identity(
        "purchase",
        {"email": body.get("email"), "phone": body.get("phone")},
        {"order_id": body.get("order_id"), "value": body.get("value"), "currency": "USD"},
    )
    return jsonify(ok=True)
