"""Pairing, in one place: read and check the browser's pairing headers once, keep the
request's pending event in a ContextVar, and queue it when the response succeeded.

Every adapter (ASGI, WSGI, Django, Flask) does the same four steps through
:class:`Pairing`: a cheap look for the id header, :meth:`Pairing.start` (match the
route, validate the headers, ask ``consent``), the app runs with
:func:`current_event` set, then :meth:`Pairing.finish` with the status code.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Union

from . import _wire
from ._event import EVENT_ID_RE, HEADER_NAME_RE, as_mapping
from ._log import RateLimitedLog, safe
from ._match import Rule
from ._request import RequestContext

if TYPE_CHECKING:
    from ._client import LayerSync

# Set in the ASGI scope / WSGI environ of a request whose pairing is already handled,
# so that two layers installed (say ASGI and Django) send one event.
HANDLED_KEY = "layersync.handled"
ASGI_ID_HEADER = _wire.EVENT_ID_HEADER.lower().encode("latin-1")
ASGI_NAME_HEADER = _wire.EVENT_NAME_HEADER.lower().encode("latin-1")
_ID_SIZE, _NAME_SIZE = len(ASGI_ID_HEADER), len(ASGI_NAME_HEADER)
WSGI_ID_KEY = "HTTP_" + _wire.EVENT_ID_HEADER.upper().replace("-", "_")
WSGI_NAME_KEY = "HTTP_" + _wire.EVENT_NAME_HEADER.upper().replace("-", "_")
_ID_KEY = _wire.EVENT_ID_HEADER.lower()
_NAME_KEY = _wire.EVENT_NAME_HEADER.lower()

#: ``consent(request) -> bool``: may this request's event be sent? ``async def`` is
#: awaited by the async adapters (ASGI, async Django) and refused by the sync ones.
Consent = Callable[[Any], Union[bool, Awaitable[bool]]]
#: ``is_success(status) -> bool``: does this response count as a conversion?
IsSuccess = Callable[[int], Union[bool, Awaitable[bool]]]


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

    def update(self, props: Mapping[str, Any] | object | None = None, /, **more: Any) -> None:
        """Add props (``value``, ``order_id``, ``items``...), as ``track()`` takes them: a
        mapping, a dataclass or a pydantic model."""
        if props is not None:
            self.props.update(as_mapping(props) or {})
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


def set_current(pending: PendingEvent | None) -> contextvars.Token[PendingEvent | None]:
    return _current.set(pending)


def reset_current(token: contextvars.Token[PendingEvent | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # reset from another context: nothing to undo there
        pass


def asgi_pairing(headers: Any) -> tuple[str, str] | None:
    """The raw pairing header values from ASGI headers, or None: one pass, no decoding
    of any other header (most requests carry none, and cost a length test per header)."""
    event_id = event_name = None
    for name, value in headers:
        size = len(name)
        if size == _ID_SIZE and name.lower() == ASGI_ID_HEADER:
            event_id = value if event_id is None else event_id + b", " + value
        elif size == _NAME_SIZE and name.lower() == ASGI_NAME_HEADER:
            event_name = value if event_name is None else event_name + b", " + value
    if event_id is None or event_name is None:
        return None
    return event_id.decode("latin-1"), event_name.decode("latin-1")


def read_pairing(client: LayerSync, ctx: RequestContext, *, matched_only: bool = True) -> tuple[str, str] | None:
    """:func:`check_pairing` for a request already read into a context."""
    ids, names = ctx.headers.get(_ID_KEY), ctx.headers.get(_NAME_KEY)
    if not ids or not names:
        return None
    return check_pairing(client, ", ".join(ids), ", ".join(names), ctx.path, matched_only=matched_only)


def check_pairing(
    client: LayerSync, event_id: str, event_name: str, path: str, *, matched_only: bool = True
) -> tuple[str, str] | None:
    """The validated ``(event_id, event_name)`` of a request's pairing headers, or None.

    The headers come from the browser: an id outside a bounded safe charset, a name
    that is not snake_case, or a name the matched route may not carry (by default the
    one the browser SDK itself stamps on that path) is refused, counted and logged.
    With ``matched_only=False`` a path outside the matcher allows the browser's name."""
    rule = client.settings.matcher.match(path)
    if rule is None:
        if matched_only:
            return None
        rule = Rule(path, None)
    event_id, event_name = event_id.strip(), event_name.strip()
    if not EVENT_ID_RE.fullmatch(event_id) or not HEADER_NAME_RE.fullmatch(event_name):
        client._refuse("invalid_header", "refused malformed pairing headers on %s", safe(path))
        return None
    if not rule.allows(event_name, path):
        client._refuse(
            "name_not_allowed",
            "refused a %s pairing header on %s: the pattern %s allows %s (see the matcher setting)",
            safe(event_name),
            safe(path),
            rule.pattern,
            _allowed(rule, path),
        )
        return None
    return event_id, event_name


def _allowed(rule: Rule, path: str) -> str:
    if rule.names is not None:
        return " | ".join(sorted(rule.names))
    return f"{_wire.browser_event_name_for(path)} (the browser SDK's name for this path)"


def default_is_success(status: int) -> bool:
    """A failed add-to-cart is not a conversion: only 2xx and 3xx pair."""
    return 200 <= status < 400


class Pairing:
    """What every adapter does for a matched request, without any framework."""

    __slots__ = ("_log", "client", "consent", "is_success")

    def __init__(
        self,
        client: LayerSync,
        *,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
        can_await: bool = False,
    ) -> None:
        for name, hook in (("consent", consent), ("is_success", is_success)):
            if hook is None:
                continue
            if not callable(hook):
                raise TypeError(f"{name} must be a callable, got {type(hook).__name__}")
            if not can_await and inspect.iscoroutinefunction(hook):
                raise TypeError(
                    f"{name} is an async function, which this synchronous middleware cannot await: "
                    "pass a plain function (or use the ASGI middleware / async Django)"
                )
        self.client = client
        self.consent = consent
        self.is_success = is_success or default_is_success
        self._log = RateLimitedLog()

    @property
    def active(self) -> bool:
        settings = self.client.settings
        return settings.enabled and bool(settings.matcher)

    # -- start: match, validate, consent ----------------------------------------------------
    def start(self, event_id: str, event_name: str, path: str, request: object) -> PendingEvent | None:
        """The pending event for a request with pairing headers, or None. Never raises."""
        try:
            pairing = check_pairing(self.client, event_id, event_name, path)
            if pairing is None:
                return None
            if self.consent is not None and not self._sync_answer(self.consent(request), "consent"):
                return None
            return PendingEvent(*pairing)
        except Exception as exc:
            self._internal_error(exc)
            return None

    async def astart(self, event_id: str, event_name: str, path: str, request: object) -> PendingEvent | None:
        """:meth:`start` for async adapters: an ``async def`` consent is awaited."""
        try:
            pairing = check_pairing(self.client, event_id, event_name, path)
            if pairing is None:
                return None
            if self.consent is not None:
                answer = self.consent(request)
                if inspect.isawaitable(answer):
                    answer = await answer
                if not answer:
                    return None
            return PendingEvent(*pairing)
        except Exception as exc:
            self._internal_error(exc)
            return None

    def _sync_answer(self, answer: object, hook: str) -> bool:
        if inspect.isawaitable(answer):  # a coroutine object is truthy: never take it for a yes
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            self._log.warn(
                f"awaitable:{hook}",
                "%s returned an awaitable, which this synchronous middleware cannot await: "
                "the paired event is not sent",
                hook,
                level=logging.ERROR,
            )
            return False
        return bool(answer)

    # -- finish: the response status is known ------------------------------------------------
    def finish(self, pending: PendingEvent, request: object, status: int) -> None:
        """Queue the paired event if the response succeeded. Never raises, never waits."""
        try:
            if pending.cancelled or not self._sync_answer(self.is_success(status), "is_success"):
                return
            self.client._track_paired(pending, request)
        except Exception as exc:
            self._internal_error(exc)

    async def afinish(self, pending: PendingEvent, request: object, status: int) -> None:
        """:meth:`finish` for async adapters: an ``async def`` is_success is awaited."""
        try:
            if pending.cancelled:
                return
            answer = self.is_success(status)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                self.client._track_paired(pending, request)
        except Exception as exc:
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        self.client._refuse("internal_error", "layersync middleware error (the request went on): %r", exc)
