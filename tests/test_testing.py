"""The pytest fixtures the README offers (``layersync_middleware.testing``): what an app's
own tests get from ``pytest_plugins = ["layersync_middleware.testing"]``."""

from __future__ import annotations

import asyncio

from helpers import settings

from layersync_middleware import LayerSync
from layersync_middleware._delivery.transport import Outcome
from layersync_middleware.testing import MemoryTransport


def test_layersync_client_delivers_into_layersync_events(
    layersync_client: LayerSync, layersync_events: MemoryTransport
) -> None:
    eid = layersync_client.track("purchase", {"value": 10, "currency": "USD"})
    assert eid is not None and layersync_client.flush(1) == 0
    [event] = layersync_events.named("purchase")
    assert event["event_id"] == eid and event["custom_data"]["value"] == 10
    layersync_events.clear()
    assert layersync_events.events == [] and layersync_events.batches == []


def test_layersync_capture_takes_what_every_client_of_the_app_sends(layersync_capture: MemoryTransport) -> None:
    # The app's own client, made as the app makes it: its hub at a port nobody listens on.
    app_client = LayerSync(settings(api_url="http://127.0.0.1:9"))
    eid = app_client.track("lead")
    assert [e["event_id"] for e in layersync_capture.wait_for(1)] == [eid]
    app_client.shutdown(1)


def test_a_memory_transport_answers_what_its_responder_says() -> None:
    refused = MemoryTransport(lambda events: [Outcome("drop", 401, None, "HTTP 401")] * len(events))
    client = LayerSync(settings(sender="sync"), transport=refused)
    delivery = client.send("purchase")
    assert (delivery.ok, delivery.status) == (False, 401)
    assert refused.events == [] and len(refused.batches) == 1  # tried, not stored as arrived
    client.shutdown(0)
    asyncio.run(refused.aclose())
    assert refused.closed
