"""What every example shop shares: the catalogue, the page, and where the browser SDK
comes from. Copy it along with the app you pick."""

from __future__ import annotations

import html
import json
import os
import secrets
from pathlib import Path

from layersync_middleware.hub.sites import DEMO_SITE

PRICES = {"SKU-A": 79.5, "SKU-B": 50.0}
MATCHER = ["/api/cart/*", "/api/checkout/*", "/api/orders"]

# Production pages load the SDK from a CDN; tests and offline demos point
# LAYERSYNC_BROWSER_SDK at a local copy of dist/index.global.js (from npm).
CDN_SDK = "https://unpkg.com/@alaasync/layersync-web@0.4.0/dist/index.global.js"
LOCAL_SDK = "/static/layersync-web.js"


def browser_sdk_file() -> Path | None:
    path = os.environ.get("LAYERSYNC_BROWSER_SDK")
    return Path(path) if path and Path(path).is_file() else None


def new_order_id() -> str:
    return f"ORD-{secrets.token_hex(3).upper()}"


def cart_props(item_id: str | None) -> dict[str, object]:
    """What the server adds to a paired add_to_cart: the real price, from the catalogue."""
    price = PRICES.get(item_id or "", 0.0)
    return {"value": price, "currency": "USD", "items": [{"item_id": item_id, "price": price}]}


def order_total(items: list[str]) -> float:
    return round(sum(PRICES.get(i, 0.0) for i in items), 2)


def page() -> str:
    config = {
        "siteId": os.environ.get("LAYERSYNC_SITE_ID", DEMO_SITE.site_id),
        "publishableKey": os.environ.get("LAYERSYNC_PUBLISHABLE_KEY", DEMO_SITE.publishable_key),
        "apiUrl": os.environ.get("LAYERSYNC_API_URL", "https://layersynchub.com"),
        "autoTrack": True,
    }
    sdk = LOCAL_SDK if browser_sdk_file() else CDN_SDK
    return PAGE.replace("{{SDK}}", html.escape(sdk)).replace("{{CONFIG}}", json.dumps(config))


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Example shop</title></head>
<body>
<h1>Example shop</h1>
<p>Widget (SKU-A) $79.50 · Gadget (SKU-B) $50.00</p>
<button id="add">Add to cart</button>
<button id="checkout">Checkout</button>
<button id="order">Place order</button>
<pre id="log"></pre>
<script src="{{SDK}}"></script>
<script>
  // What a real pixel would have set; the server reads them from the same-origin requests.
  document.cookie = "_fbp=fb.1.1795665695826.1122334455; path=/";
  document.cookie = "_fbc=fb.1.1795665695826.IwAR-example; path=/";
  const ls = window.LayerSync.LayerSync.init({{CONFIG}});
  window.shop = { ls, log: [] };
  function note(what) { window.shop.log.push(what); document.getElementById('log').textContent += what + "\\n"; }

  async function addToCart(item, opts) {
    ls.track('add_to_cart', { items: [{ item_id: item, quantity: 1, price: 0 }] });
    const r = await fetch('/api/cart/add' + (opts && opts.fail ? '?fail=1' : ''), {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ item_id: item }),
    });
    note('cart ' + r.status);
    return r.status;
  }
  async function beginCheckout() {
    ls.track('begin_checkout', {});
    const r = await fetch('/api/checkout/start', { method: 'POST' });
    note('checkout ' + r.status);
    return r.status;
  }
  function placeOrder(items, opts) {
    ls.track('purchase', { currency: 'USD', order_id: 'client-' + Date.now() });
    return new Promise(resolve => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/orders' + (opts && opts.fail ? '?fail=1' : ''));
      xhr.setRequestHeader('Content-Type', 'application/json');
      xhr.onload = () => { note('order ' + xhr.status); resolve(xhr.status); };
      xhr.send(JSON.stringify({ items, email: 'ada@example.com' }));
    });
  }
  Object.assign(window.shop, { addToCart, beginCheckout, placeOrder });
  document.getElementById('add').onclick = () => addToCart('SKU-A');
  document.getElementById('checkout').onclick = () => beginCheckout();
  document.getElementById('order').onclick = () => placeOrder(['SKU-A', 'SKU-B']);
</script>
</body>
</html>
"""
