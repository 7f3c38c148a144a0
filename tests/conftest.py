from __future__ import annotations

pytest_plugins = ["layersync_middleware.testing"]

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from layersync_middleware import LayerSync, Settings
from layersync_middleware.hub import HubServer, HubSite, create_hub

if TYPE_CHECKING:
    from layersync_middleware.testing import MemoryTransport

SITE = HubSite("site_test", "pk_test_publishable", "sk_test_secret_key")
SECRET = SITE.secret_key


class LiveHub:
    """The project's own hub on a loopback port, with helpers for assertions."""

    def __init__(self, server: HubServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def events(self, source: str | None = None) -> list[dict[str, Any]]:
        evs = [e for e in self.http.get("/api/hub/events").json()["events"] if source in (None, e["source"])]
        return list(reversed(evs))

    def groups(self) -> list[dict[str, Any]]:
        return list(reversed(self.http.get("/api/hub/groups").json()["groups"]))

    def faults(self, **faults: Any) -> None:
        self.http.post("/api/hub/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        self.http.post("/api/hub/reset").raise_for_status()


@pytest.fixture(scope="session")
def _hub_server() -> Iterator[HubServer]:
    with HubServer(create_hub([SITE])) as server:
        yield server


@pytest.fixture
def hub(_hub_server: HubServer) -> Iterator[LiveHub]:
    live = LiveHub(_hub_server)
    live.reset()
    yield live
    live.reset()
    live.http.close()


def settings(**options: Any) -> Settings:
    base: dict[str, Any] = {"site_id": SITE.site_id, "secret_key": SECRET, "api_url": "http://127.0.0.1:9"}
    return Settings(**{**base, **options})


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
