"""The client: ``track``, ``track_with_identity``, ``track_from_headers``, ``send``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from ._build import MAX_HOOK_DEPTH, BeforeSend, Builder, Paired, in_hook
from ._delivery import make_worker
from ._delivery.core import DropReason, OnDrop, Stats
from ._delivery.transport import AsyncTransport, Outcome, Transport
from ._event import Event, map_props_sized
from ._log import RateLimitedLog, client_logger
from ._pairing import PendingEvent, read_pairing
from ._request import request_context
from ._settings import Settings, check_unknown

__all__ = ["BeforeSend", "Delivery", "LayerSync"]


class Delivery(NamedTuple):
    """What ``send()`` learned: ``ok`` on a 2xx. ``queued``: it failed for now and the
    background sender will keep trying."""

    ok: bool
    status: int | None
    event_id: str | None
    error: str | None = None
    queued: bool = False


class LayerSync:
    """The LayerSync client. Create one per process and share it across threads and tasks.

    ``track*`` never raise and never wait on the network: they build the event, hand it
    to the background sender and return its ``event_id`` (None when the event was
    refused: bad input, a duplicate, tracking disabled). ``send``/``asend`` deliver
    now and report the outcome.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        /,
        *,
        transport: Transport | AsyncTransport | None = None,
        on_drop: OnDrop | None = None,
        before_send: BeforeSend | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_options(options)
        elif options:
            check_unknown(sorted(options))
            settings = settings.replace(**options)
        if before_send is not None and not callable(before_send):
            raise TypeError("before_send must be a callable taking an event and returning it (or None)")
        self.settings = settings
        log = client_logger(settings.console_log)
        self._log = RateLimitedLog(log)
        self._builder = Builder(settings, self._refuse, before_send)
        self._transport = transport
        self._worker = make_worker(settings, transport, on_drop, log)
        self._worker.sender.build = self._builder.paired

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        transport: Transport | AsyncTransport | None = None,
        on_drop: OnDrop | None = None,
        before_send: BeforeSend | None = None,
        **overrides: Any,
    ) -> LayerSync:
        """A client from ``LAYERSYNC_*`` environment variables (``LAYERSYNC_SITE_ID``,
        ``LAYERSYNC_SECRET``, ...), with ``overrides`` on top."""
        return cls(
            Settings.from_env(environ, **overrides), transport=transport, on_drop=on_drop, before_send=before_send
        )

    def __repr__(self) -> str:
        return f"LayerSync(site_id={self.settings.site_id!r}, api_url={self.settings.api_url!r})"

    # ``with LayerSync(...) as ls:`` in scripts and jobs: everything is delivered (or
    # reported as left) before the block ends.
    def __enter__(self) -> LayerSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def __aenter__(self) -> LayerSync:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ashutdown()

    # -- tracking ----------------------------------------------------------------------------
    def track(
        self,
        event_name: str,
        props: Mapping[str, Any] | object | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
    ) -> str | None:
        """Queue an event; returns its ``event_id``, or None if it was refused or a duplicate."""
        if not self.settings.enabled or self._too_deep():
            return None
        event = self._builder.event(event_name, props, request, identity, event_id, event_time, event_source_url)
        return self._queue(event, fresh=event_id is None)

    def track_with_identity(
        self,
        event_name: str,
        traits: Mapping[str, Any],
        props: Mapping[str, Any] | object | None = None,
        *,
        request: object = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
    ) -> str | None:
        """``track`` with identity traits (email, phone, names, ...), normalised and hashed
        here: raw values never leave the process."""
        return self.track(
            event_name,
            props,
            request=request,
            identity=traits,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
        )

    def track_from_headers(self, request: object, extra_props: Mapping[str, Any] | None = None) -> str | None:
        """Forward the browser event named by the request's ``X-LayerSync-Event-Id`` and
        ``-Name`` headers. On a path the matcher does not cover, the name must be the
        one the browser SDK stamps on that path. None when the headers are absent or
        not acceptable here."""
        if not self.settings.enabled:
            return None
        try:
            ctx = request_context(request)
        except TypeError as exc:
            self._refuse("invalid", "%s", exc)
            return None
        pairing = read_pairing(self, ctx)
        if pairing is None:
            return None
        pending = PendingEvent(*pairing)
        if extra_props:
            pending.update(extra_props)
        return self._track_paired(pending, ctx, checked=True)

    # -- delivering now ------------------------------------------------------------------------
    def send(
        self,
        event_name: str,
        props: Mapping[str, Any] | object | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
        timeout: float | None = None,
    ) -> Delivery:
        """Deliver now and report the outcome, in at most ``timeout`` seconds in all
        (default: the ``timeout_ms`` setting), up to ``max_retries`` quick retries
        included. Never raises. If the hub cannot be reached in time, the event goes to
        the background sender (``queued=True``)."""
        event = None
        if self.settings.enabled and not self._too_deep():
            event = self._builder.event(event_name, props, request, identity, event_id, event_time, event_source_url)
        if event is not None:
            event = self._builder.before(event)
        if event is None:
            return Delivery(False, None, None, "refused" if self.settings.enabled else "disabled")
        eid = str(event["event_id"])
        worker = self._worker
        if not worker.sender.claim(event):
            return Delivery(False, None, eid, "duplicate")
        try:
            outcome, attempts = worker.deliver_now(
                event, self.settings.timeout if timeout is None else max(timeout, 0.0)
            )
        except Exception as exc:
            outcome, attempts = Outcome("retry", None, None, type(exc).__name__), 1
        if outcome.action == "ok":
            return Delivery(True, outcome.status, eid)
        if outcome.action == "duplicate":  # another process of the fleet sent this pair
            return Delivery(False, outcome.status, eid, "duplicate")
        # Not delivered in time: the background sender retries it after the backoff.
        queued = outcome.action == "retry" and worker.enqueue_claimed(event, failed=(max(attempts, 1), outcome))
        if not queued:
            worker.sender.release(event)
        return Delivery(False, outcome.status, eid, outcome.error, queued)

    async def asend(
        self,
        event_name: str,
        props: Mapping[str, Any] | object | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
        timeout: float | None = None,
    ) -> Delivery:
        """``send`` for async code: the loop is never blocked."""
        # Read the request here, on the loop: a request object is not for other threads.
        ctx = None
        if request is not None:
            try:
                ctx = request_context(request)
            except TypeError as exc:
                self._refuse("invalid", "%s", exc)
                return Delivery(False, None, None, "refused")
        return await asyncio.to_thread(  # copies the context, as a handler's code would expect
            self.send,
            event_name,
            props,
            request=ctx,
            identity=identity,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
            timeout=timeout,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> int:
        """Try every queued event once within ``timeout`` seconds (default: the request
        timeout); returns how many are still queued."""
        return self._worker.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> int:
        """Flush within ``timeout`` seconds (default ``shutdown_timeout``), then stop the
        worker and close its connections; returns how many events are left. The client
        stays usable: the worker starts again on the next event."""
        return self._worker.shutdown(timeout)

    async def aflush(self, timeout: float | None = None) -> int:
        """:meth:`flush` without blocking the event loop."""
        return await self._worker.aflush(timeout)

    async def ashutdown(self, timeout: float | None = None) -> int:
        """:meth:`shutdown` without blocking the event loop."""
        return await self._worker.ashutdown(timeout)

    def stats(self) -> Stats:
        """Counters of the sender: queued, sent, retried, duplicates, dropped by reason..."""
        return self._worker.stats()

    # -- private: the adapters call these ------------------------------------------------------
    def _refuse(self, reason: DropReason, message: str | None = None, *args: object) -> None:
        """Count an event (or a part of one) refused before the queue; log once a minute
        per reason, and every time at DEBUG (a developer retrying sees why again)."""
        self._worker.sender.refuse(reason)
        if message is not None and not self._log.warn(f"refuse:{reason}", message, *args):
            self._log.debug(message, *args)

    def _too_deep(self) -> bool:
        """A hook that tracks from inside a hook that tracked: refused, or it would loop."""
        if in_hook() < MAX_HOOK_DEPTH:
            return False
        self._refuse("internal_error", "an event tracked from inside before_send/on_drop nested too deep: dropped")
        return True

    def _track_paired(self, pending: PendingEvent, request: object, *, checked: bool = False) -> str | None:
        """Queue the paired event of a request whose headers passed :func:`check_pairing`.

        The request path reads the request once into a record (the handler's props are
        mapped now: they may be the app's objects); the sender builds the body from it.
        ``checked``: return None for a pair already sent (the hand-off then takes the lock;
        the middleware's does not, and the sender counts a duplicate when it looks)."""
        if not self.settings.enabled:
            return None
        try:
            custom, dropped, chars = map_props_sized(pending.props) if pending.props else ({}, [], 0)
            record = Paired(
                pending.event_id,
                pending.event_name,
                time.time(),
                custom,
                tuple(dropped),
                chars,
                dict(pending.traits) if pending.traits else None,
                pending.read if pending.read is not None else request_context(request),
            )
            if checked:
                return pending.event_id if self._worker.submit_paired(record) else None
            self._worker.offer(record)
        except Exception as exc:
            self._refuse("internal_error", "could not queue an event: %s", type(exc).__name__)
            return None
        return pending.event_id

    def _queue(self, event: Event | None, *, fresh: bool = False) -> str | None:
        """Hand a built event to the background sender; returns its id, or None.
        ``fresh``: its id was made here, so it cannot be a duplicate: no lock is taken."""
        if event is None:
            return None
        if self._builder.before_send is not None:
            event = self._builder.before(event)
            if event is None:
                return None
        try:
            if fresh:
                self._worker.offer(event)
                return str(event["event_id"])
            return str(event["event_id"]) if self._worker.submit(event) else None
        except Exception as exc:
            self._refuse("internal_error", "could not queue an event: %s", type(exc).__name__)
            return None
