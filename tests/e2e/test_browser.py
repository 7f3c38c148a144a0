"""The real browser SDK (@alaasync/layersync-web@0.4.0) in headless Chromium, against the
example apps under real servers and the local hub."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SITE, LiveHub
from servers import serve

pytestmark = pytest.mark.e2e

APPS = [("uvicorn", "example_apps.fastapi_app:app"), ("gunicorn-gthread", "example_apps.flask_app:app")]
PAIRING_HEADERS = ("x-layersync-event-id", "x-layersync-event-name")


def wait_for(what: str, check: Callable[[], Any], hub: LiveHub, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    groups = json.dumps(hub.groups(), indent=1)
    events = json.dumps([(e["source"], e["event"]["event_name"], e["event"]["event_id"]) for e in hub.events()])
    pytest.fail(f"timed out waiting for {what}\nhub groups: {groups}\nhub events: {events}")


class Shop:
    """One browser page on an example shop, and what the page's requests carried."""

    def __init__(self, page: Any, url: str, hub: LiveHub) -> None:
        self.page, self.hub = page, hub
        self.sent: list[dict[str, Any]] = []
        page.on("request", self._record)
        page.goto(url + "/")
        page.wait_for_function("window.shop !== undefined")

    def _record(self, request: Any) -> None:
        if "/api/" in request.url and "/api/v1/" not in request.url:
            headers = request.headers
            self.sent.append({"url": request.url, **{h: headers.get(h) for h in PAIRING_HEADERS}})

    def run(self, js: str) -> Any:
        return self.page.evaluate(js)

    def paired_ids(self, path: str) -> list[str | None]:
        return [r["x-layersync-event-id"] for r in self.sent if r["url"].split("?")[0].endswith(path)]

    def group(self, event_id: str) -> dict[str, Any] | None:
        return next((g for g in self.hub.groups() if g["event_id"] == event_id), None)

    def server_event(self, event_id: str) -> dict[str, Any]:
        events: list[dict[str, Any]] = [
            e["event"] for e in self.hub.events("server") if e["event"]["event_id"] == event_id
        ]
        [event] = events
        return event

    def expect_pair(self, event_id: str | None, name: str) -> dict[str, Any]:
        assert event_id, f"the page's {name} request carried no pairing header: {self.sent}"

        def paired() -> dict[str, Any] | None:
            g = self.group(event_id)
            return g if g and g["browser"] and g["server"] else None

        group = wait_for(f"the {name} pair {event_id}", paired, self.hub)
        assert (group["event_name"], group["browser"], group["server"]) == (name, 1, 1), group
        return self.server_event(event_id)


@pytest.fixture(params=APPS, ids=["fastapi-uvicorn", "flask-gunicorn"])
def shop_url(request: pytest.FixtureRequest, hub: LiveHub, sdk_path: Path) -> Iterator[str]:
    server, target = request.param
    env = {
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub.url,
        "LAYERSYNC_PUBLISHABLE_KEY": SITE.publishable_key,
        "LAYERSYNC_BROWSER_SDK": str(sdk_path),
    }
    with serve(server, target, env) as url:
        yield url


def test_shopper_session_pairs_every_step(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    ua = shop.run("navigator.userAgent")

    assert shop.run("shop.addToCart('SKU-A')") == 200
    cart = shop.expect_pair(shop.paired_ids("/api/cart/add")[-1], "add_to_cart")
    assert cart["custom_data"]["value"] == 79.5  # the handler's enrichment

    assert shop.run("shop.beginCheckout()") == 200
    shop.expect_pair(shop.paired_ids("/api/checkout/start")[-1], "begin_checkout")

    assert shop.run("shop.placeOrder(['SKU-A', 'SKU-B'])") == 201  # over XMLHttpRequest
    order = shop.expect_pair(shop.paired_ids("/api/orders")[-1], "purchase")

    # What only the server knows, and what the browser event cannot carry.
    for event in (cart, order):
        assert event["user_data"]["client_ip_address"] == "127.0.0.1"
        assert event["user_data"]["user_agent"] == ua
        assert event["user_data"]["fbp"] == "fb.1.1795665695826.1122334455"
        assert event["user_data"]["fbc"] == "fb.1.1795665695826.IwAR-example"
    assert order["custom_data"]["value"] == 129.5 and order["custom_data"]["order_id"].startswith("ORD-")
    assert len(order["user_data"]["em"]) == 64
    browser_side = [e["event"] for e in hub.events("browser") if e["event"]["event_id"] == order["event_id"]]
    assert "client_ip_address" not in browser_side[0].get("user_data", {})
    page.close()


def test_a_stale_id_sent_twice_is_forwarded_once(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    # Two cart requests before the first response: the SDK stamps both with one id.
    shop.run("""(async () => {
        shop.ls.track('add_to_cart', {items: [{item_id: 'SKU-B'}]});
        const post = () => fetch('/api/cart/add', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                   body: JSON.stringify({item_id: 'SKU-B'})});
        await Promise.all([post(), post()]);
    })()""")
    ids = shop.paired_ids("/api/cart/add")
    assert len(ids) == 2 and ids[0] == ids[1] and ids[0]
    shop.expect_pair(ids[0], "add_to_cart")
    time.sleep(0.5)  # a second server event, if any, would be on its way by now
    group = shop.group(ids[0])
    assert group is not None and group["server"] == 1 and group["duplicates"] == 0, group
    page.close()


def test_consent_denied_sends_no_headers_and_no_server_event(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    shop.run("shop.ls.setConsent(false)")
    assert shop.run("shop.addToCart('SKU-A')") == 200
    assert shop.paired_ids("/api/cart/add") == [None]
    time.sleep(0.5)
    assert hub.events("server") == []
    page.close()


def test_a_failed_order_sends_no_server_event(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    assert shop.run("shop.placeOrder(['SKU-A'], {fail: true})") == 402
    [failed_id] = shop.paired_ids("/api/orders")
    assert failed_id
    wait_for("the browser purchase event", lambda: shop.group(failed_id), hub)
    time.sleep(0.5)
    group = shop.group(failed_id)
    assert group is not None and group["browser"] == 1 and group["server"] == 0, group
    assert hub.events("server") == []
    page.close()


def test_page_requests_never_wait_on_a_hanging_hub(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    hub.faults(mode="hang", hang_seconds=20, target="server")
    timing = """async (paired) => {
        if (paired) shop.ls.track('add_to_cart', {items: [{item_id: 'SKU-A'}]});
        const t0 = performance.now();
        const r = await fetch('/api/cart/add', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                body: JSON.stringify({item_id: 'SKU-A'})});
        await r.text();
        return performance.now() - t0;
    }"""
    baseline = min(page.evaluate(timing, False) for _ in range(5))  # matched path, no event to send
    paired = [page.evaluate(timing, True) for _ in range(5)]  # each sends an event into the hung hub
    assert all(shop.paired_ids("/api/cart/add")[-5:])
    # The hub holds every server request for 20 s; the page never notices.
    assert max(paired) < baseline + 500, (baseline, paired)
    page.close()
