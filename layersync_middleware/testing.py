"""Capture events in your own tests, without a network.

    from layersync_middleware import LayerSync
    from layersync_middleware.testing import MemoryTransport

    transport = MemoryTransport()
    ls = LayerSync(site_id="site_1", secret_key="sk_test", sender="sync", transport=transport)
    ls.track("purchase", {"value": 10})
    assert transport.events[0]["event_name"] == "purchase"

Or, with pytest, ``pytest_plugins = ["layersync_middleware.testing"]`` in ``conftest.py``
and the ``layersync_client`` fixture (a ``sync`` client capturing into
``layersync_client.sender`` ... see :func:`layersync_events`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._event import Event
from ._transport import Outcome

Responder = Callable[[Sequence[Event]], "list[Outcome] | None"]


class MemoryTransport:
    """Records every event it is given and answers ``ok`` (or what ``responder`` says).
    Implements both the sync and the async transport protocols."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.events: list[Event] = []
        self.batches: list[list[Event]] = []
        self.responder = responder
        self.closed = False
        self._lock = threading.Lock()

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        answer = self.responder(events) if self.responder is not None else None
        outcomes = answer if answer is not None else [Outcome("ok", 200)] * len(events)
        with self._lock:
            self.batches.append(list(events))
            self.events.extend(e for e, o in zip(events, outcomes) if o.action == "ok")
        return outcomes

    async def asend(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        return self.send(events, bodies, timeout)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True

    def named(self, event_name: str) -> list[Event]:
        return [e for e in self.events if e.get("event_name") == event_name]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.batches.clear()


try:  # the fixtures, for projects that use pytest
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def layersync_events() -> MemoryTransport:
        """A fresh :class:`MemoryTransport`."""
        return MemoryTransport()

    @pytest.fixture
    def layersync_client(layersync_events: MemoryTransport) -> Iterator[Any]:
        """A ``sync`` client that delivers into ``layersync_events``."""
        from ._client import LayerSync

        client = LayerSync(
            site_id="site_test",
            secret_key="sk_test_fixture",
            api_url="http://127.0.0.1:9",
            sender="sync",
            transport=layersync_events,
        )
        yield client
        client.shutdown(0)
