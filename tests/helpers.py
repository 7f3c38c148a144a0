"""Shared by the tests: the test site, a live hub wrapper, settings with defaults, the one
polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from layersync_middleware import Settings
from layersync_middleware._event import Event, build_event, new_event_id
from layersync_middleware.hub import HubServer, HubSite

SITE = HubSite("site_test", "pk_test_publishable", "sk_test_secret_key")
SECRET = SITE.secret_key

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = 10.0, *, interval: float = 0.02) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that.

    The one way a test waits: for a thing to happen, never for a time. Past ``timeout``
    seconds it fails, saying what it waited for and the last value it saw. A predicate that
    knows the wait is hopeless (the server it waits for exited) raises its own error.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


class LiveHub:
    """The project's own hub on a loopback port, with helpers for assertions."""

    def __init__(self, server: HubServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def events(self, source: str | None = None) -> list[dict[str, Any]]:
        evs = [e for e in self.http.get("/api/hub/events").json()["events"] if source in (None, e["source"])]
        return list(reversed(evs))

    def server_ids(self) -> list[str]:
        """The id of every server event the hub stored, once per receipt, oldest first."""
        return [e["event"]["event_id"] for e in self.events("server")]

    def groups(self) -> list[dict[str, Any]]:
        return list(reversed(self.http.get("/api/hub/groups").json()["groups"]))

    def faults(self, **faults: Any) -> None:
        self.http.post("/api/hub/faults", json=faults).raise_for_status()

    def hits(self) -> int:
        """How many requests met the faults set last (a hanging hub: how many it holds)."""
        return int(self.http.get("/api/hub/faults").json()["hits"])

    def reset(self) -> None:
        self.http.post("/api/hub/reset", json={}).raise_for_status()


def settings(**options: Any) -> Settings:
    base: dict[str, Any] = {"site_id": SITE.site_id, "secret_key": SECRET, "api_url": "http://127.0.0.1:9"}
    return Settings(**{**base, **options})


def queued(event_id: str | None) -> str:
    """The id ``track`` returned for an event it queued (None: refused or a duplicate)."""
    assert event_id is not None, "the event was not queued"
    return event_id


class StartResponse:
    """A WSGI server's ``start_response``: remembers the arguments of each call as given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Callable[[bytes], object]:
        self.calls.append(args)
        return self.write

    def write(self, data: bytes) -> None:
        raise AssertionError("the legacy write() callable is not used")

    @property
    def statuses(self) -> list[str]:
        return [str(call[0]) for call in self.calls]


def make_event(name: str = "add_to_cart", **props: Any) -> Event:
    """A built event of the test site, as the client would queue it."""
    return build_event(
        site_id=SITE.site_id,
        event_name=name,
        event_id=new_event_id(name),
        props=props,
        user_data={},
        event_source_url=None,
    )
