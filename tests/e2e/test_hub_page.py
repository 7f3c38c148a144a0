"""The hub's page, in a real browser: it lists events and dedupe groups and refreshes itself."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from helpers import SITE, LiveHub

from layersync_middleware._event import new_event_id

pytestmark = pytest.mark.e2e


def post(hub: LiveHub, source: str, event_id: str, **user_data: str) -> None:
    headers = (
        {"Authorization": f"Bearer {SITE.secret_key}", "X-LayerSync-Site-Id": SITE.site_id}
        if source == "server"
        else {"X-LayerSync-Api-Key": SITE.publishable_key, "X-LayerSync-Site-Id": SITE.site_id}
    )
    body = {
        "site_id": SITE.site_id,
        "event_id": event_id,
        "event_name": "purchase",
        "event_time": int(time.time()),
        "user_data": user_data,
        "custom_data": {"value": 9.5},
    }
    httpx.post(f"{hub.url}/api/v1/events/{source}", json=body, headers=headers).raise_for_status()


def test_page_shows_groups_and_refreshes(browser: Any, hub: LiveHub) -> None:
    paired, lonely = new_event_id("purchase"), new_event_id("purchase")
    post(hub, "browser", paired)
    post(hub, "server", paired, em="a" * 64, client_ip_address="203.0.113.9")
    page = browser.new_page()
    page.goto(hub.url + "/")
    row = page.locator(f"#groups tr[data-event-id='{paired}']")
    row.wait_for(timeout=5000)
    assert row.locator("td.paired").inner_text() == "paired"
    assert "203.0.113.9" in page.locator("#events").inner_text()
    assert "em" in page.locator("#events").inner_text()  # which fields arrived hashed

    post(hub, "server", lonely)  # no reload: the page refreshes by itself
    lonely_row = page.locator(f"#groups tr[data-event-id='{lonely}']")
    lonely_row.wait_for(timeout=5000)
    assert lonely_row.locator("td.single").inner_text() == "only server"
    assert "2 groups, 1 paired" in page.locator("#status").inner_text()
    page.close()
