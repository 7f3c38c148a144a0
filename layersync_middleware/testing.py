"""Capture events in your own tests, without a network.

The app's own clients (the Flask extension's, the Django middleware's, the one
``add_middleware`` builds from the environment) deliver into memory while
:func:`capture_events` is active::

    from layersync_middleware.testing import capture_events

    def test_checkout(client):
        with capture_events() as captured:
            client.post("/api/orders", headers={...})
            captured.wait_for(1)  # the background sender delivers on its own thread
        assert captured.named("purchase")[0]["custom_data"]["value"] == 10

With pytest, ``pytest_plugins = ["layersync_middleware.testing"]`` in ``conftest.py``
gives the same as the ``layersync_capture`` fixture, plus ``layersync_events`` (a
fresh :class:`MemoryTransport`) and ``layersync_client`` (a ``sync`` client that
delivers into it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._delivery.transport import Outcome
from ._event import Event

Responder = Callable[[Sequence[Event]], "list[Outcome] | None"]


class MemoryTransport:
    """Records every event it is given and answers ``ok`` (or what ``responder`` says).
    Implements both the sync and the async transport protocols."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.events: list[Event] = []
        self.batches: list[list[Event]] = []
        self.responder = responder
        self.closed = False
        self._lock = threading.Condition()

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        answer = self.responder(events) if self.responder is not None else None
        outcomes = answer if answer is not None else [Outcome("ok", 200)] * len(events)
        with self._lock:
            self.batches.append(list(events))
            self.events.extend(e for e, o in zip(events, outcomes) if o.action == "ok")
            self._lock.notify_all()
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

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Event]:
        """Wait until at least ``count`` events arrived (a background sender delivers
        on its own thread), at most ``timeout`` seconds; the events either way."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.events) < count and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            return list(self.events)


@contextmanager
def capture_events(transport: MemoryTransport | None = None) -> Iterator[MemoryTransport]:
    """Every LayerSync client in the process, existing or created meanwhile, delivers
    into ``transport`` (a fresh :class:`MemoryTransport` by default) until the block
    ends; then each goes back to its own transport."""
    from ._delivery import override_transport

    captured = transport if transport is not None else MemoryTransport()
    with override_transport(captured):
        yield captured


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
    def layersync_capture() -> Iterator[MemoryTransport]:
        """What every LayerSync client of the app sends during the test (see :func:`capture_events`)."""
        with capture_events() as captured:
            yield captured

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
