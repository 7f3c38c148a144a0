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
from typing import Any, Protocol, Union

from . import _wire
from ._event import EVENT_ID_RE, HEADER_NAME_RE, as_mapping
from ._log import RateLimitedLog
from ._match import SDK_RULES, Verdict
from ._request import _SCOPE_NAME_LENGTHS, _SCOPE_NAMES, RawScope, RequestContext, route_path, wsgi_text
from ._settings import Settings


class Tracker(Protocol):
    """What pairing needs of the client (:class:`~layersync_middleware.Tracker`): its
    settings, a way to count a refusal, and the hand-off of a paired request."""

    @property
    def settings(self) -> Settings: ...

    def _refuse(self, reason: Any, message: str | None = None, *args: object) -> None: ...

    def _track_paired(self, pending: PendingEvent, request: object, *, checked: bool = False) -> str | None: ...


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

    __slots__ = ("cancelled", "event_id", "event_name", "props", "read", "traits")

    def __init__(self, event_id: str, event_name: str) -> None:
        self.event_id = event_id
        self.event_name = event_name
        self.props: dict[str, Any] = {}
        self.traits: dict[str, Any] = {}
        self.cancelled = False
        #: The request as the adapter read it when it came in (ASGI), for the event.
        self.read: RawScope | None = None

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


#: The request's pending event (see :func:`current_event`); adapters set and reset it.
current_pending: contextvars.ContextVar[PendingEvent | None] = contextvars.ContextVar("layersync_pending", default=None)
_current = current_pending


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


# Methods that never pair unless ``pair_read_only`` is on: the SDK stamps them too
# (a cart page's GET within 30 s of an add-to-cart), but the event belongs to the POST.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a server makes of a pairing header sent twice: joined lines (WSGI, Django) carry
# a comma, which no valid id or name has; the ASGI scan gives this value instead of
# joining 60,000 lines (issue 22.1).
REPEATED = ",", ","


def asgi_pairing(headers: Any) -> tuple[str, str, list[tuple[str, bytes]]] | None:
    """One pass over ASGI headers: the pairing header values and, raw, every header the
    event will use (the request is read once; see :class:`~._request.RawScope`). None
    without both pairing headers, most requests: a dictionary lookup per header, no
    decoding. A pairing header that comes twice gives :data:`REPEATED`, joining nothing."""
    event_id = event_name = None
    repeated = False
    found: list[tuple[str, bytes]] = []
    wanted = _SCOPE_NAMES.get
    for raw_name, raw_value in headers:
        name = wanted(raw_name)
        if name is None:
            # Servers send lower-case names; lower() only what could be one we want.
            if len(raw_name) not in _SCOPE_NAME_LENGTHS:
                continue
            name = wanted(raw_name.lower())
            if name is None:
                continue
        if name == _ID_KEY:
            repeated = repeated or event_id is not None
            event_id = raw_value
        elif name == _NAME_KEY:
            repeated = repeated or event_name is not None
            event_name = raw_value
        else:
            found.append((name, raw_value))
    if event_id is None or event_name is None:
        return None
    if repeated:
        return (*REPEATED, found)
    return event_id.decode("latin-1"), event_name.decode("latin-1"), found


def asgi_url(scope: Any) -> tuple[str, str]:
    """``(route path, URL)`` of an ASGI request: the path the app routes on (without
    ``root_path``) and the URL as the browser sent it (mount prefix and query included)."""
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    query: bytes = scope.get("query_string") or b""
    if root:
        route = route_path(path, root)
        if not path.startswith(root):  # servers that keep root_path out of path
            path = root + path
    else:
        route = path
    return route, (path + "?" + query.decode("latin-1") if query else path)


def wsgi_url(environ: Any) -> tuple[str, str]:
    """:func:`asgi_url` for a WSGI environ: ``PATH_INFO``, and ``SCRIPT_NAME`` +
    ``PATH_INFO`` + the query string."""
    path: str = environ.get("PATH_INFO") or "/"
    root: str = environ.get("SCRIPT_NAME") or ""
    query: str = environ.get("QUERY_STRING") or ""
    url = root + path if root else path
    return wsgi_text(path), (url + "?" + query if query else url)


def read_pairing(client: Tracker, ctx: RequestContext) -> tuple[str, str] | None:
    """The validated pairing of a request already read into a context (for
    ``track_from_headers``: the app asked, so any method pairs)."""
    ids, names = ctx.headers.get(_ID_KEY), ctx.headers.get(_NAME_KEY)
    if not ids or not names:
        return None
    if len(ids) > 1 or len(names) > 1:
        ids = names = [REPEATED[0]]
    url = ctx.full_path + "?" + ctx.query if ctx.query else ctx.full_path
    return check_pairing(client, "POST", ctx.path, url, ids[0], names[0], read_only=True)


def check_pairing(
    client: Tracker, method: str, path: str, url: str, event_id: str, event_name: str, *, read_only: bool = False
) -> tuple[str, str] | None:
    """The validated ``(event_id, event_name)`` of a request's pairing headers, or None.

    ``path`` is the route path (patterns match it), ``url`` the URL as the browser sent
    it (the SDK's rules and names read it). The headers come from the browser: a
    read-only method (unless ``read_only``), a repeated header, an id outside a bounded
    safe charset, or a name the URL may not carry (by default the one the browser SDK
    stamps on it) is refused, counted by reason and logged once a minute."""
    if not read_only and method in READ_ONLY_METHODS:
        client._refuse(
            "read_only_method",
            "did not pair %s %s: %s requests never pair (the event belongs to the POST, PUT or PATCH); "
            "set pair_read_only to pair them",
            method,
            url,
            method,
        )
        return None
    if "," in event_id or "," in event_name:
        client._refuse(
            "repeated_header",
            "refused the pairing headers of %s %s: X-Tracker-Event-Id or X-Tracker-Event-Name came "
            "more than once, or with a comma (the browser SDK sends each once)",
            method,
            url,
        )
        return None
    event_id, event_name = event_id.strip(), event_name.strip()
    matcher = client.settings.matcher
    verdict = matcher.verdict(path, url)
    if verdict.decided_by is None:
        client._refuse(
            "unmatched",
            "did not pair %s %s (stamped %s): %s matches this URL; if your browser code stamps it "
            "(cartEndpoints, orderEndpoints, checkoutEndpoints), add it to the matcher setting or to "
            "cart_endpoints, order_endpoints or checkout_endpoints",
            method,
            url,
            event_name,
            "no pattern of the matcher setting and none of the browser SDK's rules"
            if matcher.sdk
            else "no pattern of the matcher setting (and sdk_rules is off)",
        )
        return None
    # A name among the verdict's is well-formed already (names are checked at start-up).
    names = verdict.names
    if not EVENT_ID_RE.fullmatch(event_id) or (
        (names is None or event_name not in names) and not HEADER_NAME_RE.fullmatch(event_name)
    ):
        client._refuse("invalid_header", "refused malformed pairing headers on %s %s", method, url)
        return None
    if not verdict.allows(event_name):
        client._refuse(
            "name_not_allowed",
            "refused the pairing header %s on %s %s: %s",
            event_name,
            method,
            url,
            _allowed(verdict),
        )
        return None
    return event_id, event_name


def _allowed(verdict: Verdict) -> str:
    names = sorted(verdict.names or ())
    if verdict.decided_by == SDK_RULES:
        return (
            f"the browser SDK stamps {names[0]} on this URL (if your browser code passes its own "
            "cartEndpoints, orderEndpoints or checkoutEndpoints, give the server the same regexes "
            "in cart_endpoints, order_endpoints or checkout_endpoints)"
        )
    if verdict.names is None:  # any name: never refused
        return "any name is allowed"
    pattern = verdict.decided_by
    if not names:
        return (
            f"the browser SDK stamps no event on this URL, and the pattern {pattern} names none; "
            f"write the names it may carry in the matcher setting ({pattern}=name)"
        )
    return f"the pattern {pattern} allows {' or '.join(names)} here (see the matcher setting)"


def default_is_success(status: int) -> bool:
    """A failed add-to-cart is not a conversion: only 2xx and 3xx pair."""
    return 200 <= status < 400


class Pairing:
    """What every adapter does for a matched request, without any framework."""

    __slots__ = ("_log", "client", "consent", "is_success", "sync_success")

    def __init__(
        self,
        client: Tracker,
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
        # Nothing to await: async adapters may call the plain finish (no coroutine per request).
        self.sync_success = not inspect.iscoroutinefunction(self.is_success)
        self._log = RateLimitedLog()

    @property
    def active(self) -> bool:
        settings = self.client.settings
        return settings.enabled and bool(settings.matcher)

    # -- start: match, validate, consent ----------------------------------------------------
    def start(
        self, method: str, path: str, url: str, event_id: str, event_name: str, request: object
    ) -> PendingEvent | None:
        """The pending event for a request with pairing headers, or None. Never raises.

        ``path`` is the route path, ``url`` the URL as the browser sent it (see
        :func:`check_pairing`)."""
        try:
            pairing = check_pairing(
                self.client, method, path, url, event_id, event_name, read_only=self.client.settings.pair_read_only
            )
            if pairing is None:
                return None
            if self.consent is not None and not self._consented(self._sync_answer(self.consent(request), "consent")):
                return None
            return PendingEvent(*pairing)
        except Exception as exc:
            self._internal_error(exc)
            return None

    async def astart(
        self, method: str, path: str, url: str, event_id: str, event_name: str, request: object
    ) -> PendingEvent | None:
        """:meth:`start` for async adapters: an ``async def`` consent is awaited."""
        if self.consent is None:  # nothing to await: no coroutine to run
            return self.start(method, path, url, event_id, event_name, request)
        try:
            pairing = check_pairing(
                self.client, method, path, url, event_id, event_name, read_only=self.client.settings.pair_read_only
            )
            if pairing is None:
                return None
            answer = self.consent(request)
            if inspect.isawaitable(answer):
                answer = await answer
            if not self._consented(answer):
                return None
            return PendingEvent(*pairing)
        except Exception as exc:
            self._internal_error(exc)
            return None

    def _consented(self, answer: object) -> bool:
        """Only ``True`` consents. ``False`` is a no; anything else (``"false"``, ``0``,
        ``None``, a dict) is a mistake in the hook: refused, counted and logged."""
        if answer is True:
            return True
        if answer is not False:
            self.client._refuse(
                "invalid_consent",
                "consent returned %s, not True or False: the paired event is not sent "
                "(only True consents; return a bool)",
                type(answer).__name__,
            )
        return False

    def _sync_answer(self, answer: object, hook: str) -> object:
        if answer is True or answer is False:  # the common answers, without the awaitable test
            return answer
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
        return answer

    # -- finish: the response status is known ------------------------------------------------
    def finish(self, pending: PendingEvent, request: object, status: int) -> None:
        """Queue the paired event if the response succeeded. Never raises, never waits."""
        try:
            if pending.cancelled:
                return
            if self.is_success is default_is_success:
                if not 200 <= status < 400:
                    return
            elif not self._sync_answer(self.is_success(status), "is_success"):
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
