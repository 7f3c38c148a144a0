"""The demo: a local hub, a small Starlette shop wired with the middleware, and a scripted
shopping session that plays the browser SDK's part (``layersync demo``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import _wire
from .._client import LayerSync
from .._event import build_event, new_event_id
from .._pairing import current_event
from ..asgi import LayerSyncMiddleware
from .app import create_hub
from .platforms import VERDICT_LABELS
from .server import HubServer
from .sites import DEMO_SITE as SITE

PRICES = {"SKU-A": 79.5, "SKU-B": 50.0}


def demo_shop(client: LayerSync) -> Any:
    async def cart_add(request: Request) -> JSONResponse:
        item = await request.json()
        pending = current_event()
        if pending is not None:  # enrich the paired event with what the server knows
            price = PRICES.get(item.get("item_id"), 0.0)
            pending.update(
                value=price, currency="USD", items=[{"item_id": item.get("item_id"), "quantity": 1, "price": price}]
            )
        return JSONResponse({"ok": True})

    async def orders(request: Request) -> JSONResponse:
        order = await request.json()
        order_id = f"ORD-{secrets.token_hex(3).upper()}"
        total = sum(PRICES.get(i, 0.0) for i in order.get("items", []))
        pending = current_event()
        if pending is not None:
            pending.update(order_id=order_id, value=total, currency="USD")
            pending.identify(email=order.get("email"))
        return JSONResponse({"order_id": order_id, "value": total}, status_code=201)

    async def leads(request: Request) -> JSONResponse:
        # Not a paired route: the app tracks the lead itself, with the id the page sent.
        form = await request.json()
        sent = client.send(
            "lead",
            {"form": "newsletter"},
            request=request,
            event_id=form["event_id"],
            identity={"email": form["email"]},
        )
        return JSONResponse({"ok": sent.ok}, status_code=201)

    app = Starlette(
        routes=[
            Route("/api/cart/add", cart_add, methods=["POST"]),
            Route("/api/orders", orders, methods=["POST"]),
            Route("/api/leads", leads, methods=["POST"]),
        ]
    )
    return LayerSyncMiddleware(app, client=client)


def _browser_event(name: str, props: dict[str, Any], page: str, ua: str, cookies: dict[str, str]) -> dict[str, Any]:
    """An event as the browser SDK would post it."""
    event = build_event(
        site_id=SITE.site_id,
        event_name=name,
        event_id=new_event_id(name),
        props=props,
        user_data={"user_agent": ua, "fbp": cookies["_fbp"]},
        event_source_url=page,
    )
    event["client_meta"] = {
        "sdk": "@alaasync/layersync-web@0.3.3",
        "queued_at_ms": int(time.time() * 1000),
        "attempts": 0,
    }
    return event


def run_demo(say: Callable[[str], None] = print, wait: Callable[[], object] | None = None) -> int:
    """The scripted session. ``wait``: called once the session is over, with the hub
    still up (the command waits for Enter at a terminal), so the page can be looked at."""
    hub_app = create_hub([SITE])
    with HubServer(hub_app) as hub:
        say(f"local hub       {hub.url}  (open it in a browser to watch events arrive)")
        client = LayerSync(
            site_id=SITE.site_id, secret_key=SITE.secret_key, api_url=hub.url, matcher=["/api/cart/*", "/api/orders"]
        )
        with HubServer(demo_shop(client)) as shop:
            say(f"example shop    {shop.url}  (Starlette + LayerSyncMiddleware)")
            ua = "Mozilla/5.0 (X11; Linux x86_64) LayerSyncDemo/1.0"
            cookies = {"_fbp": "fb.1.1795665695826.1234567890", "_ga": "GA1.1.42.1795665695"}
            browser = httpx.Client(
                base_url=shop.url, headers={"User-Agent": ua, "Referer": f"{shop.url}/products/a"}, cookies=cookies
            )
            to_hub = httpx.Client(
                base_url=hub.url,
                headers={_wire.API_KEY_HEADER: SITE.publishable_key, _wire.SITE_ID_HEADER: SITE.site_id},
            )

            def browser_fires(name: str, props: dict[str, Any], event_id: str | None = None) -> str:
                event = _browser_event(name, props, f"{shop.url}/products/a", ua, cookies)
                if event_id is not None:
                    event["event_id"] = event_id
                to_hub.post(_wire.BROWSER_EVENT_PATH, json=event).raise_for_status()
                return str(event["event_id"])

            def pairing(event_id: str, name: str) -> dict[str, str]:
                return {_wire.EVENT_ID_HEADER: event_id, _wire.EVENT_NAME_HEADER: name}

            say("\n1. add to cart: the browser SDK fires add_to_cart, then the page POSTs /api/cart/add")
            atc = browser_fires("add_to_cart", {"item_id": "SKU-A"})
            r = browser.post("/api/cart/add", json={"item_id": "SKU-A"}, headers=pairing(atc, "add_to_cart"))
            say(f"   /api/cart/add -> {r.status_code}, paired with {atc}")
            say("   the page repeats the request with the same stale id (the SDK does): forwarded once")
            browser.post("/api/cart/add", json={"item_id": "SKU-A"}, headers=pairing(atc, "add_to_cart"))

            say("2. purchase: the browser fires purchase, then the page POSTs /api/orders")
            pur = browser_fires("purchase", {"currency": "USD"})
            r = browser.post(
                "/api/orders",
                json={"items": ["SKU-A", "SKU-B"], "email": "ada@example.com"},
                headers=pairing(pur, "purchase"),
            )
            say(f"   /api/orders -> {r.status_code} {r.json()['order_id']}, paired with {pur}")

            say("3. a payment webhook confirms an order: track_with_identity from the server alone")
            direct = client.send(
                "purchase",
                {"order_id": "ORD-WEBHOOK", "value": 129.5, "currency": "USD"},
                identity={"email": " Ada@Example.com ", "phone": "+1 (650) 555-1212"},
            )
            say(f"   delivered now: ok={direct.ok} status={direct.status} event_id={direct.event_id}")

            say("4. a forged 'purchase' header on the cart route: refused, never forwarded")
            forged = "pur_" + secrets.token_hex(8)
            r = browser.post("/api/cart/add", json={"item_id": "SKU-B"}, headers=pairing(forged, "purchase"))
            say(f"   /api/cart/add -> {r.status_code} (the response is untouched)")

            say("5. a product page: the browser fires view_item; no server route tracks it (browser only)")
            browser_fires("view_item", {"item_id": "SKU-B"})

            say("6. a newsletter form: the page tracks 'Lead', the app tracks 'lead' with the same id (name mismatch)")
            lead = browser_fires("Lead", {}, event_id=new_event_id("lead"))
            browser.post("/api/leads", json={"event_id": lead, "email": "grace@example.com"})

            say("7. a thank-you page that uses the order number as event_id, reloaded with another total (id reused)")
            browser_fires("purchase", {"order_id": "1001", "value": 20.0, "currency": "USD"}, event_id="order_1001")
            browser_fires("purchase", {"order_id": "1001", "value": 35.0, "currency": "USD"}, event_id="order_1001")

            say("8. checkout: the browser fires purchase; the payment webhook for it comes 6 minutes later (late pair)")
            late = browser_fires("purchase", {"order_id": "ORD-LATE", "value": 42.0, "currency": "USD"})
            client.flush(5.0)  # what the steps above queued arrives before the hub's clock moves on
            with hub_app.hub.store.later(6 * 60 + 5):  # the hub's clock plays the 6 minutes
                client.send("purchase", {"order_id": "ORD-LATE", "value": 42.0, "currency": "USD"}, event_id=late)

            left = client.flush(5.0)
            stats = client.stats()
            groups = hub_app.hub.store.groups(limit=1000)
            counts = hub_app.hub.store.verdict_counts()
            browser.close()
            to_hub.close()
        client.shutdown(1.0)
        say("\nDedupe groups on the hub, each with the verdict the ad platforms would reach:\n")
        say(format_groups(groups))
        say(f"\nsender: sent={stats.sent} duplicates skipped={stats.duplicates} refused={stats.dropped} left={left}")
        say(
            f"\npage:      {hub.url}/  (click a group: why, timeline, both bodies, match keys, the platforms' payloads)"
        )
        say("verdicts:  " + ", ".join(f"{VERDICT_LABELS[v].lower()} {n}" for v, n in counts.items()))
        forged_seen = any(g["event_id"] == forged for g in groups)
        if not all(counts.values()) or forged_seen or left:
            say("demo FAILED: expected a group of each verdict, no forged event and an empty queue")
            return 1
        if wait is not None:
            say("\nthe hub stays up so you can look: open the page above; press Enter (or Ctrl-C) to stop")
            wait()
    return 0


def format_groups(groups: list[dict[str, Any]]) -> str:
    rows = [("event", "event_id", "browser", "server", "verdict")]
    for g in reversed(groups):
        rows.append((g["event_name"], g["event_id"], str(g["browser"]), str(g["server"]), g["verdict_label"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
