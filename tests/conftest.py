from __future__ import annotations

pytest_plugins = ["layersync_middleware.testing"]

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from durable_apps.hubctl import SwitchableHub
from helpers import SITE, LiveHub, settings

from layersync_middleware import LayerSync
from layersync_middleware._event import new_event_id
from layersync_middleware.hub import HubServer, create_hub

if TYPE_CHECKING:
    from layersync_middleware.testing import MemoryTransport


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The browser tests go last: Playwright's sync API keeps an event loop running in
    # the main thread while it is open, which asyncio.run() in other tests refuses.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture(scope="session")
def _hub_server() -> Iterator[HubServer]:
    with HubServer(create_hub([SITE])) as server:
        yield server
    server.app.hub.store.close()  # its SQLite connection (Python 3.13 warns of an open one)


@pytest.fixture
def hub(_hub_server: HubServer) -> Iterator[LiveHub]:
    live = LiveHub(_hub_server)
    live.reset()
    yield live
    live.reset()
    live.http.close()


# Pairing headers with fresh ids per test (Django, Flask): adapters configured alike share
# one client, and it forwards a pair once.
@pytest.fixture
def ATC() -> dict[str, str]:
    return {"X-LayerSync-Event-Id": new_event_id("add_to_cart"), "X-LayerSync-Event-Name": "add_to_cart"}


@pytest.fixture
def PUR() -> dict[str, str]:
    return {"X-LayerSync-Event-Id": new_event_id("purchase"), "X-LayerSync-Event-Name": "purchase"}


@pytest.fixture
def switchable_hub() -> Iterator[SwitchableHub]:
    """A hub of the test's own that goes ``down()`` and comes back ``up()`` on its port."""
    hub = SwitchableHub()
    yield hub
    hub.close()


@pytest.fixture
def memory(layersync_events: MemoryTransport) -> MemoryTransport:
    return layersync_events


@pytest.fixture
def sync_client(memory: MemoryTransport) -> Iterator[LayerSync]:
    client = LayerSync(settings(sender="sync"), transport=memory)
    yield client
    client.shutdown(0)


@pytest.fixture
def hub_client(hub: LiveHub) -> Iterator[LayerSync]:
    client = LayerSync(settings(api_url=hub.url, timeout_ms=2000))
    yield client
    client.shutdown(1)


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
