"""Flask shop with an app factory.

LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... gunicorn example_apps.flask_app:app

Without the two variables the shop still runs, with tracking off and one error log
saying what to set.
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from example_apps import _shop
from layersync_middleware import current_event
from layersync_middleware.flask import FlaskLayerSync

layersync = FlaskLayerSync()  # one for the module; each app gets its own client in init_app
shop = Blueprint("shop", __name__)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["LAYERSYNC_MATCHER"] = _shop.MATCHER  # the rest from LAYERSYNC_* environment variables
    layersync.init_app(app)
    app.register_blueprint(shop)
    return app


@shop.get("/")
def index() -> ResponseReturnValue:
    return _shop.page()


@shop.get(_shop.LOCAL_SDK)
def browser_sdk() -> ResponseReturnValue:
    path = _shop.browser_sdk_file()
    if path is None:
        abort(404)
    return send_file(path, mimetype="text/javascript")


@shop.post("/api/cart/add")
def cart_add() -> ResponseReturnValue:
    item = request.get_json(silent=True) or {}
    if request.args.get("fail"):
        return jsonify(ok=False), 500
    pending = current_event()
    if pending is not None:
        pending.update(_shop.cart_props(item.get("item_id")))
    return jsonify(ok=True)


@shop.post("/api/checkout/start")
def checkout_start() -> ResponseReturnValue:
    return jsonify(ok=True)


@shop.post("/api/orders")
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


@shop.post("/webhooks/payment")
def payment_webhook() -> ResponseReturnValue:
    # A server-authoritative event: no browser, PII hashed here before it leaves.
    # layersync.client is the current app's client.
    body = request.get_json(silent=True) or {}
    layersync.client.track_with_identity(
        "purchase",
        {"email": body.get("email"), "phone": body.get("phone")},
        {"order_id": body.get("order_id"), "value": body.get("value"), "currency": "USD"},
    )
    return jsonify(ok=True)


app = create_app()
