"""Every example app under a real server: a request with pairing headers gives exactly one
correct paired event on the hub; one without them, or with a forged name, gives none."""

from __future__ import annotations

import httpx
import pytest
from helpers import SITE, LiveHub, wait_for
from servers import serve

from layersync_middleware._event import new_event_id

APPS = [
    ("uvicorn", "example_apps.fastapi_app:app"),
    ("uvicorn", "example_apps.starlette_app:app"),
    ("uvicorn", "example_apps.django_app:asgi_application"),
    ("gunicorn", "example_apps.flask_app:app"),
    ("gunicorn-gthread", "example_apps.wsgi_app:app"),
    ("gunicorn", "example_apps.django_app:application"),
    ("uwsgi", "example_apps.flask_app:app"),
]


# A fresh connection per request: uWSGI's --http-socket closes idle keep-alive
# connections, and a reused one can be reset under the client's feet.
ONE_SHOT = httpx.Limits(max_keepalive_connections=0)


def env(hub: LiveHub) -> dict[str, str]:
    return {"LAYERSYNC_SITE_ID": SITE.site_id, "LAYERSYNC_SECRET": SITE.secret_key, "LAYERSYNC_API_URL": hub.url}


def pairing(event_id: str, name: str) -> dict[str, str]:
    return {"X-LayerSync-Event-Id": event_id, "X-LayerSync-Event-Name": name}


@pytest.mark.parametrize(("server", "target"), APPS, ids=[f"{s}-{t.split('.')[1]}" for s, t in APPS])
def test_example_app_pairs_under_a_real_server(hub: LiveHub, server: str, target: str) -> None:
    atc, pur, forged = new_event_id("add_to_cart"), new_event_id("purchase"), new_event_id("purchase")
    ua = {"User-Agent": "Mozilla/5.0 ExampleAppTest"}
    with serve(server, target, env(hub)) as url, httpx.Client(base_url=url, headers=ua, limits=ONE_SHOT) as shop:
        shop.cookies.set("_fbp", "fb.1.1795665695826.42")
        assert shop.post("/api/cart/add", json={"item_id": "SKU-A"}).status_code == 200  # no headers
        r = shop.post("/api/cart/add", json={"item_id": "SKU-A"}, headers=pairing(forged, "purchase"))
        assert r.status_code == 200  # the forged name is refused, the response untouched
        r = shop.post("/api/cart/add", json={"item_id": "SKU-A"}, headers=pairing(atc, "add_to_cart"))
        assert r.status_code == 200
        r = shop.post(
            "/api/orders",
            json={"items": ["SKU-A", "SKU-B"], "email": "ada@example.com"},
            headers=pairing(pur, "purchase"),
        )
        assert r.status_code == 201
        order_id = r.json()["order_id"]
        r = shop.post("/api/orders?fail=1", json={"items": []}, headers=pairing(new_event_id("purchase"), "purchase"))
        assert r.status_code == 402
        wait_for(lambda: len(hub.events("server")) >= 2, "the two paired server events")
    # The server has stopped (SIGTERM): whatever it still held was drained on the way out.
    events = {e["event"]["event_id"]: e["event"] for e in hub.events("server")}
    assert set(events) == {atc, pur}, events
    cart, order = events[atc], events[pur]
    assert cart["event_name"] == "add_to_cart" and cart["custom_data"]["value"] == 79.5
    assert order["event_name"] == "purchase"
    assert order["custom_data"]["order_id"] == order_id and order["custom_data"]["value"] == 129.5
    assert len(order["user_data"]["em"]) == 64
    for event in (cart, order):
        assert event["user_data"]["client_ip_address"] == "127.0.0.1"
        assert event["user_data"]["user_agent"] == ua["User-Agent"]
        assert event["user_data"]["fbp"] == "fb.1.1795665695826.42"
    assert all(g["duplicates"] == 0 for g in hub.groups())
