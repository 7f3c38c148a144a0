"""Delivery: the rules written once (:mod:`.core`, with its :mod:`.queue`), the drivers that
run them (:mod:`.drivers`: inline, a thread, an asyncio task; the Celery task in
:mod:`layersync_middleware.celery` runs the same rules), the transports (:mod:`.transport`
to the hub, :mod:`.handoff` to a Celery broker, :mod:`.dedup` claiming pairs in Redis), the
spool (:mod:`.spool`) and the process's exit (:mod:`.lifecycle`).

The client asks :func:`make_worker` for its driver and knows nothing else of these.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from .._settings import Settings
from .core import OnDrop, Sender
from .drivers import AsyncioWorker, InlineWorker, ThreadWorker, Worker
from .lifecycle import WORKERS
from .transport import AsyncHTTPTransport, AsyncTransport, HTTPTransport, Transport, threaded_async

__all__ = ["make_worker", "override_transport"]


def make_worker(
    settings: Settings,
    given: Transport | AsyncTransport | None,
    on_drop: OnDrop | None,
    log: logging.Logger,
) -> Worker:
    """The sender's rules and the driver ``settings.sender`` names, over ``given`` (a custom
    transport) or the default one: HTTP to the hub, the Celery hand-off, each claiming
    pairs in Redis first with ``dedup_url``. :func:`override_transport` wins over both."""
    sender = Sender(settings, on_drop=on_drop, log=log)
    if settings.metrics is not None:  # only then is prometheus_client or opentelemetry imported
        from .metrics import Observer

        sender._observer = Observer(sender, settings.metrics)

    def chosen() -> Transport | AsyncTransport | None:
        return _OVERRIDE.transport or given

    if settings.sender == "celery" and settings.enabled and chosen() is None:
        from .handoff import bind_app

        bind_app(settings)  # finds the app on this thread (Celery's current app is per thread); fails at start-up

    def sync_transport() -> Transport:
        transport = chosen()
        if transport is None:
            transport = default_transport(settings)
        if not isinstance(transport, Transport):
            raise TypeError(f"{type(transport).__name__} has no send(); sender={settings.sender!r} needs one")
        return fleet_wide(transport, settings)

    if settings.sender == "sync":
        return InlineWorker(sender, sync_transport)
    if settings.sender == "asyncio":

        def async_transport() -> AsyncTransport:
            transport = chosen()
            if transport is None and not settings.dedup_url:
                return AsyncHTTPTransport(settings)
            if isinstance(transport, AsyncTransport) and not settings.dedup_url:
                return transport
            return threaded_async(sync_transport())

        return AsyncioWorker(sender, sync_transport, async_transport)
    return ThreadWorker(sender, sync_transport)  # "thread", and "celery": a thread hands batches to the broker


def default_transport(settings: Settings) -> Transport:
    """HTTP to the hub, or, with ``sender="celery"``, a hand-off to the Celery task."""
    if settings.sender == "celery":
        from .handoff import handoff_transport

        return handoff_transport(settings)
    return HTTPTransport(settings)


def fleet_wide(transport: Transport, settings: Settings) -> Transport:
    """With ``dedup_url``, each pair is claimed in Redis before it is sent: across every
    process of the fleet, the first claimer sends and the others count a duplicate."""
    if not settings.dedup_url:
        return transport
    from .dedup import claiming_transport  # an optional extra: imported only when chosen

    return claiming_transport(transport, settings)


# -- tests: every worker of the process delivers through one transport ------------------------
class _Override:
    transport: Transport | AsyncTransport | None = None


_OVERRIDE = _Override()


@contextlib.contextmanager
def override_transport(transport: Transport | AsyncTransport) -> Iterator[None]:
    """Every client in the process (existing and new) delivers through ``transport``
    while the block runs; for tests (see :func:`layersync_middleware.testing.capture_events`)."""
    previous = _OVERRIDE.transport
    _OVERRIDE.transport = transport
    for worker in list(WORKERS):
        worker._drop_transports()
    try:
        yield
    finally:
        _OVERRIDE.transport = previous
        for worker in list(WORKERS):
            worker._drop_transports()
