"""The real browser SDK (@alaasync/layersync-web@0.4.0) in headless Chromium, against the
example apps under real servers and the local hub."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from helpers import SITE, LiveHub, wait_for
from servers import ROOT, serve
from strategies import SDK_URLS

from layersync_middleware.hub import HubServer

pytestmark = pytest.mark.e2e

APPS = [("uvicorn", "example_apps.fastapi_app:app"), ("gunicorn-gthread", "example_apps.flask_app:app")]
PAIRING_HEADERS = ("x-layersync-event-id", "x-layersync-event-name")


T = TypeVar("T")


def wait_at_hub(hub: LiveHub, check: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """:func:`helpers.wait_for`, failing with what the hub holds (groups and events)."""
    try:
        return wait_for(check, what, timeout)
    except AssertionError as timed_out:
        groups = json.dumps(hub.groups(), indent=1)
        events = json.dumps([(e["source"], e["event"]["event_name"], e["event"]["event_id"]) for e in hub.events()])
        pytest.fail(f"{timed_out}\nhub groups: {groups}\nhub events: {events}")


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

        group = wait_at_hub(self.hub, paired, f"the {name} pair {event_id}")
        assert (group["event_name"], group["browser"], group["server"]) == (name, 1, 1), group
        return self.server_event(event_id)


def app_env(hub_url: str, sdk_path: Path) -> dict[str, str]:
    """What a shop under test reads: the test site's keys, the hub, the SDK's file."""
    return {
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub_url,
        "LAYERSYNC_PUBLISHABLE_KEY": SITE.publishable_key,
        "LAYERSYNC_BROWSER_SDK": str(sdk_path),
    }


@pytest.fixture(params=APPS, ids=["fastapi-uvicorn", "flask-gunicorn"])
def shop_url(request: pytest.FixtureRequest, hub: LiveHub, sdk_path: Path) -> Iterator[str]:
    server, target = request.param
    with serve(server, target, app_env(hub.url, sdk_path)) as url:
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
    # Not a wait for something to happen: a window in which a second server event, were
    # there one, would arrive. Nothing to poll for an absence.
    time.sleep(0.5)
    group = shop.group(ids[0])
    assert group is not None and group["server"] == 1 and group["duplicates"] == 0, group
    page.close()


def test_consent_denied_sends_no_headers_and_no_server_event(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    shop.run("shop.ls.setConsent(false)")
    assert shop.run("shop.addToCart('SKU-A')") == 200
    assert shop.paired_ids("/api/cart/add") == [None]
    time.sleep(0.5)  # a window in which a server event, were there one, would arrive
    assert hub.events("server") == []
    page.close()


def test_a_failed_order_sends_no_server_event(browser: Any, hub: LiveHub, shop_url: str) -> None:
    page = browser.new_page()
    shop = Shop(page, shop_url, hub)
    assert shop.run("shop.placeOrder(['SKU-A'], {fail: true})") == 402
    [failed_id] = shop.paired_ids("/api/orders")
    assert failed_id
    wait_at_hub(hub, lambda: shop.group(failed_id), "the browser purchase event")
    time.sleep(0.5)  # a window in which a server event, were there one, would arrive
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


# --- issue 20: what the SDK stamps pairs with no matcher, on every stack --------------------
SDK_STACKS = {
    "starlette-uvicorn": ("uvicorn", "e2e.sdk_apps:starlette_app"),
    "flask-gunicorn": ("gunicorn-gthread", "e2e.sdk_apps:flask_app"),
    "django-asgi-uvicorn": ("uvicorn", "e2e.sdk_django:asgi_app"),
    "django-wsgi-gunicorn": ("gunicorn-gthread", "e2e.sdk_django:wsgi_app"),
}
RUN_STEPS = "async steps => { const out = []; for (const s of steps) out.push(await probe.step(...s)); return out; }"


@pytest.fixture(scope="module", params=list(SDK_STACKS), ids=list(SDK_STACKS))
def sdk_stack(request: pytest.FixtureRequest, _hub_server: HubServer, sdk_path: Path) -> Iterator[str]:
    """One server per stack for the whole module, with no matcher configured."""
    server, target = SDK_STACKS[request.param]
    env = {**app_env(_hub_server.url, sdk_path), "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    with serve(server, target, env) as url:
        yield url


class Probe:
    """One page of the SDK probe, and the pairing headers each of its requests carried."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.page = browser.new_page()
        self.carried: list[tuple[str, str, str | None, str | None]] = []  # method, path, id, name
        self.page.on("request", self._record)
        self.page.goto(url + "/_page")
        self.page.wait_for_function("window.probe !== undefined")

    def _record(self, request: Any) -> None:
        if request.url.startswith(self.url) and "/_" not in request.url and "favicon" not in request.url:
            h = request.headers
            path = request.url[len(self.url) :]
            self.carried.append((request.method, path, h.get(PAIRING_HEADERS[0]), h.get(PAIRING_HEADERS[1])))

    def run(self, steps: list[list[Any]]) -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = self.page.evaluate(RUN_STEPS, steps)
        self.page.evaluate("probe.ls.flush()")
        return done

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + "/_stats", timeout=5).json()
        return answer


def wait_for_groups(hub: LiveHub, ids: set[str], server: bool = True) -> dict[str, dict[str, Any]]:
    def arrived() -> dict[str, dict[str, Any]] | None:
        groups = {g["event_id"]: g for g in hub.groups() if g["event_id"] in ids}
        ok = len(groups) == len(ids) and all(g["browser"] and (g["server"] or not server) for g in groups.values())
        return groups if ok else None

    groups: dict[str, dict[str, Any]] = wait_at_hub(hub, arrived, f"{len(ids)} groups")
    return groups


@pytest.mark.parametrize("prefix", ["", "/api"], ids=["root", "mounted"])
def test_every_default_rule_pairs_exactly_once_by_fetch_and_by_xhr(
    browser: Any, hub: LiveHub, sdk_stack: str, prefix: str
) -> None:
    probe = Probe(browser, sdk_stack)
    before = probe.stats()
    calls = [(name, via, prefix + url) for url, name in SDK_URLS for via in ("fetch", "xhr")]
    steps = [[n, name, via, "POST", url] for n, (name, via, url) in enumerate(calls)]
    done = probe.run(steps)
    assert [d["status"] for d in done] == [200] * len(steps), done
    # The SDK stamped each request with the id of the event just tracked, named as its rules say.
    carried = [c for c in probe.carried if c[0] == "POST"]
    assert [(path, eid, name) for _, path, eid, name in carried] == [
        (step[4], d["tracked"], step[1]) for step, d in zip(steps, done)
    ]
    ids = {d["tracked"] for d in done}
    assert len(ids) == len(steps)  # a fresh event per step
    # The middleware paired each (its handler saw current_event), and the hub has each pair once.
    seen = [(url, pair) for method, url, pair in probe.stats()["seen"][len(before["seen"]) :] if method == "POST"]
    assert seen == [(s[4], [d["tracked"], s[1]]) for s, d in zip(steps, done)]
    groups = wait_for_groups(hub, ids)
    names = {d["tracked"]: d["name"] for d in done}
    # Exactly one server event per pair (the browser side is the SDK's: it may resend a batch).
    got = {i: (g["event_name"], g["server"], g["browser"] >= 1) for i, g in groups.items()}
    assert got == {i: (names[i], 1, True) for i in ids}
    after = probe.stats()
    assert after["dropped"] == before["dropped"] and after["sent"] - before["sent"] == len(steps)
    probe.page.close()


def test_a_get_after_a_cart_post_and_an_unknown_endpoint_are_counted_not_paired(
    browser: Any, hub: LiveHub, sdk_stack: str
) -> None:
    probe = Probe(browser, sdk_stack)
    before = probe.stats()["dropped"]
    done = probe.run(
        [
            [100, "add_to_cart", "fetch", "POST", "/cart/add"],
            [101, None, "fetch", "GET", "/cart/items"],  # stamped with the SDK's own follow-up id
            [102, None, "xhr", "GET", "/api/cart"],
            [103, "add_to_cart", "fetch", "POST", "/basket"],  # the page's own cartEndpoints
        ]
    )
    assert [d["status"] for d in done] == [200] * 4
    [post, get, get_xhr, basket] = probe.carried
    assert all(c[2] and c[3] == "add_to_cart" for c in (post, get, get_xhr, basket)), probe.carried
    paired, follow_up = str(post[2]), str(get[2])
    assert paired == done[0]["tracked"] and follow_up != paired  # the SDK fired its own add_to_cart
    seen = [pair for _, url, pair in probe.stats()["seen"] if "favicon" not in url]
    assert seen[-4:] == [[paired, "add_to_cart"], None, None, None]
    dropped = probe.stats()["dropped"]
    delta = {k: v - before.get(k, 0) for k, v in dropped.items() if v != before.get(k, 0)}
    assert delta == {"read_only_method": 2, "unmatched": 1}
    # Only the POST reached the hub from the server; the follow-up event stays browser-only.
    groups = wait_for_groups(hub, {paired, follow_up}, server=False)
    assert (groups[paired]["server"], groups[follow_up]["server"]) == (1, 0)
    assert [e["event"]["event_id"] for e in hub.events("server")] == [paired]
    probe.page.close()
