"""The client: ``track``, ``track_with_identity``, ``track_from_headers``, ``send``."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from ._event import EVENT_ID_RE, EVENT_NAME_RE, HEADER_NAME_RE, Event, build_event, new_event_id
from ._log import RateLimitedLog, enable_console_log
from ._match import Rule
from ._pii import hash_traits
from ._request import RequestContext, request_context, request_user_data
from ._sender import AsyncioSender, OnDrop, Sender, Stats, SyncSender, ThreadSender
from ._settings import Settings, check_unknown
from ._transport import AsyncHTTPTransport, AsyncTransport, HTTPTransport, Outcome, Transport


class Delivery(NamedTuple):
    """What ``send()`` learned: ``ok`` on a 2xx. ``queued``: it failed for now and the
    background sender will keep trying."""

    ok: bool
    status: int | None
    event_id: str | None
    error: str | None = None
    queued: bool = False


class PendingEvent:
    """The paired event of the current request, before it is sent. A handler may enrich
    it (``update``, ``identify``) or ``cancel`` it; see :func:`current_event`."""

    __slots__ = ("cancelled", "event_id", "event_name", "props", "traits")

    def __init__(self, event_id: str, event_name: str) -> None:
        self.event_id = event_id
        self.event_name = event_name
        self.props: dict[str, Any] = {}
        self.traits: dict[str, Any] = {}
        self.cancelled = False

    def update(self, props: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Add props (``value``, ``order_id``, ``items``...), as ``track()`` takes them."""
        if props:
            self.props.update(props)
        self.props.update(more)

    def identify(self, traits: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Add identity traits; they are normalised and hashed before sending."""
        if traits:
            self.traits.update(traits)
        self.traits.update(more)

    def cancel(self) -> None:
        """Do not send the paired event for this request."""
        self.cancelled = True

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<PendingEvent {self.event_name} {self.event_id}{state} props={sorted(self.props)}>"


_current: contextvars.ContextVar[PendingEvent | None] = contextvars.ContextVar("layersync_pending", default=None)


def current_event() -> PendingEvent | None:
    """The paired event of the request being handled, or None when the request carries
    no (valid) pairing headers. Works in sync and async handlers."""
    return _current.get()


_MAX_URL = 2048


def _is_mapping(value: object) -> bool:
    # Typed callers pass mappings; this guards the untyped ones at run time.
    return isinstance(value, Mapping)


class _ThreadedAsync:
    """An async face for a synchronous transport (runs it in a worker thread)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def asend(self, events: Any, bodies: Any, timeout: float) -> list[Outcome]:
        return await asyncio.to_thread(self._transport.send, events, bodies, timeout)

    async def aclose(self) -> None:
        return None


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
        transport: Transport | None = None,
        on_drop: OnDrop | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_options(options)
        elif options:
            check_unknown(sorted(options), {})
            settings = settings.replace(**options)
        self.settings = settings
        if settings.console_log:
            enable_console_log()
        self._log = RateLimitedLog()
        self._sender = _make_sender(settings, transport, on_drop)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        transport: Transport | None = None,
        on_drop: OnDrop | None = None,
        **overrides: Any,
    ) -> LayerSync:
        """A client from ``LAYERSYNC_*`` environment variables (``LAYERSYNC_SITE_ID``,
        ``LAYERSYNC_SECRET``, ...), with ``overrides`` on top."""
        return cls(Settings.from_env(environ, **overrides), transport=transport, on_drop=on_drop)

    @property
    def sender(self) -> Sender:
        return self._sender

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

    # -- building -------------------------------------------------------------------------
    def _refuse(self, reason: str, message: str, *args: object) -> None:
        self._sender.count_refused(reason)
        self._log.warn(f"refuse:{reason}:{message}", message, *args)

    def build(
        self,
        event_name: str,
        props: Mapping[str, Any] | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
        paired: bool = False,
    ) -> Event | None:
        """The event body, or None (refused and counted). Never raises."""
        try:
            return self._build(event_name, props, request, identity, event_id, event_time, event_source_url, paired)
        except Exception as exc:  # bad input must never reach the app as an exception
            self._refuse("invalid", "could not build a %s event: %s", event_name, type(exc).__name__)
            return None

    def _build(
        self,
        event_name: str,
        props: Mapping[str, Any] | None,
        request: object,
        identity: Mapping[str, Any] | None,
        event_id: str | None,
        event_time: int | None,
        event_source_url: str | None,
        paired: bool,
    ) -> Event | None:
        if not self.settings.enabled:
            return None
        if not isinstance(event_name, str) or not EVENT_NAME_RE.fullmatch(event_name):
            self._refuse("invalid", "event name must be 1-64 letters, digits or _.:- starting with a letter")
            return None
        if event_id is None:
            event_id = new_event_id(event_name)
        elif not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
            self._refuse("invalid", "event_id must be 8-64 letters, digits, '_' or '-'")
            return None
        if props is not None and not _is_mapping(props):
            self._refuse("invalid", "props must be a mapping, got %s", type(props).__name__)
            return None
        if event_time is not None and (isinstance(event_time, bool) or not isinstance(event_time, int)):
            self._refuse("invalid", "event_time must be unix seconds (int)")
            return None
        user_data: dict[str, str] = {}
        if request is not None:
            ctx = request_context(request)
            page = ctx.page_url() if paired else ctx.url
            user_data = request_user_data(ctx, self.settings.trust_proxy, page)
            if event_source_url is None:
                event_source_url = page
        if event_source_url is not None and len(event_source_url) > _MAX_URL:
            # An overlong URL is a query string gone wild; the page without it still attributes.
            event_source_url = event_source_url.split("?", 1)[0]
            if len(event_source_url) > _MAX_URL:
                event_source_url = None
        if identity:
            if not _is_mapping(identity):
                self._refuse("invalid", "identity traits must be a mapping")
                return None
            hashed, rejected = hash_traits(identity)
            user_data.update(hashed)
            for trait in rejected:  # the trait's name only: its value is PII
                self._refuse("invalid_trait", "dropped identity trait %r: it could not be normalised", trait)
        return build_event(
            site_id=self.settings.site_id,
            event_name=event_name,
            event_id=event_id,
            props=props,
            user_data=user_data,
            event_source_url=event_source_url,
            event_time=event_time,
        )

    # -- tracking ----------------------------------------------------------------------------
    def track(
        self,
        event_name: str,
        props: Mapping[str, Any] | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
    ) -> str | None:
        """Queue an event; returns its ``event_id``, or None if it was refused or a duplicate."""
        event = self.build(
            event_name,
            props,
            request=request,
            identity=identity,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
        )
        return self.submit(event)

    def track_with_identity(
        self,
        event_name: str,
        traits: Mapping[str, Any],
        props: Mapping[str, Any] | None = None,
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
        ``-Name`` headers. None when the headers are absent or not acceptable here."""
        try:
            ctx = request_context(request)
        except TypeError as exc:
            self._refuse("invalid", "%s", exc)
            return None
        pairing = self.read_pairing(ctx, self.settings.matcher.match(ctx.path))
        if pairing is None:
            return None
        event = self.build(pairing[1], extra_props, request=ctx, event_id=pairing[0], paired=True)
        return self.submit(event)

    def read_pairing(self, ctx: RequestContext, rule: Rule | None) -> tuple[str, str] | None:
        """The validated ``(event_id, event_name)`` of the pairing headers, or None.

        The headers come from the browser: an id outside a bounded safe charset, a name
        that is not snake_case, or a name this route may not carry (by default the one
        the browser SDK itself stamps on this URL) is refused and counted."""
        raw = ctx.pairing()
        if raw is None:
            return None
        event_id, event_name = raw[0].strip(), raw[1].strip()
        if not EVENT_ID_RE.fullmatch(event_id) or not HEADER_NAME_RE.fullmatch(event_name):
            self._refuse("invalid_header", "refused malformed pairing headers on %s", ctx.path[:200])
            return None
        if not (rule or Rule(ctx.path, None)).allows(event_name, ctx.path, ctx.query):
            self._refuse(
                "name_not_allowed",
                "refused a %r pairing header on %s: not an event this route may carry (see matcher)",
                event_name,
                ctx.path[:200],
            )
            return None
        return event_id, event_name

    def submit(self, event: Event | None) -> str | None:
        """Hand a built event to the background sender; returns its id, or None."""
        if event is None:
            return None
        try:
            return str(event["event_id"]) if self._sender.submit(event) else None
        except Exception as exc:
            self._refuse("invalid", "could not queue an event: %s", type(exc).__name__)
            return None

    # -- delivering now ------------------------------------------------------------------------
    def send(
        self,
        event_name: str,
        props: Mapping[str, Any] | None = None,
        *,
        request: object = None,
        identity: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        event_source_url: str | None = None,
        timeout: float | None = None,
    ) -> Delivery:
        """Deliver now and report the outcome, in at most ``timeout`` seconds (default
        ``timeout_ms``), quick retries included. Never raises. If the hub cannot be
        reached in time, the event goes to the background sender (``queued=True``)."""
        event = self.build(
            event_name,
            props,
            request=request,
            identity=identity,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
        )
        if event is None:
            return Delivery(False, None, None, "refused" if self.settings.enabled else "disabled")
        eid = str(event["event_id"])
        if not self._sender.claim(event):
            return Delivery(False, None, eid, "duplicate")
        limit = self.settings.timeout_ms / 1000 if timeout is None else timeout
        try:
            outcome = self._sender.deliver_now(event, limit)
        except Exception as exc:
            outcome = Outcome("retry", None, None, type(exc).__name__)
        if outcome.action == "ok":
            return Delivery(True, outcome.status, eid)
        queued = outcome.action == "retry" and self._sender.enqueue_claimed(event)
        return Delivery(False, outcome.status, eid, outcome.error, queued)

    async def asend(
        self,
        event_name: str,
        props: Mapping[str, Any] | None = None,
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
        """Try to deliver everything queued within ``timeout`` s; returns how many are left."""
        return self._sender.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> int:
        """Flush, then stop the worker and close connections; returns how many are left."""
        return self._sender.shutdown(timeout)

    async def aflush(self, timeout: float | None = None) -> int:
        if isinstance(self._sender, AsyncioSender):
            return await self._sender.aflush(timeout)
        return await asyncio.to_thread(self._sender.flush, timeout)

    async def ashutdown(self, timeout: float | None = None) -> int:
        if isinstance(self._sender, AsyncioSender):
            return await self._sender.ashutdown(timeout)
        return await asyncio.to_thread(self._sender.shutdown, timeout)

    def stats(self) -> Stats:
        return self._sender.stats()


def _make_sender(settings: Settings, transport: Transport | None, on_drop: OnDrop | None) -> Sender:
    def sync_transport() -> Transport:
        return transport if transport is not None else HTTPTransport(settings)

    if settings.sender == "sync":
        return SyncSender(settings, sync_transport, on_drop=on_drop)
    if settings.sender == "asyncio":

        def async_transport() -> AsyncTransport:
            if transport is None:
                return AsyncHTTPTransport(settings)
            if isinstance(transport, AsyncTransport):
                return transport
            return _ThreadedAsync(transport)

        return AsyncioSender(settings, sync_transport, async_transport, on_drop=on_drop)
    return ThreadSender(settings, sync_transport, on_drop=on_drop)


_shared: dict[Settings, LayerSync] = {}
_shared_lock = threading.Lock()


def shared_client(settings: Settings) -> LayerSync:
    """One client per distinct settings in this process: every adapter configured alike
    shares one sender, one connection pool and one de-duplication memory."""
    with _shared_lock:
        client = _shared.get(settings)
        if client is None:
            client = _shared[settings] = LayerSync(settings)
        return client


def set_current(pending: PendingEvent | None) -> contextvars.Token[PendingEvent | None]:
    return _current.set(pending)


def reset_current(token: contextvars.Token[PendingEvent | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # reset from another context: nothing to undo there
        pass
