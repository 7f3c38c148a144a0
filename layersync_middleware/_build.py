"""From what the app and the request gave to the body the hub takes.

Two ways in:

* ``track()`` and ``send()``: :meth:`Builder.event` checks the app's arguments and builds
  the event in the caller (an app's objects are read while they are the app's).
* A paired request: the request path reads the request once into a :class:`Paired`
  record (the ids, the time, the handler's props already mapped, a
  :class:`~._request.RequestContext`) and queues it; :meth:`Builder.paired` builds the
  body on the sender, off the request. Queue items are data: nothing in the queue calls
  back into the client.

Nothing here does I/O. Refusals go to the ``refuse`` callback the client gives (it counts
them in the sender's statistics and logs them once a minute).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._event import (
    EVENT_ID_RE,
    EVENT_NAME_RE,
    MAX_EVENT_BYTES,
    Dropped,
    Event,
    HeaderEvent,
    as_mapping,
    assemble,
    build_checked,
    event_too_large,
    new_event_id,
)
from ._pii import hash_traits
from ._request import RawScope, RequestContext, attribution_url, context, request_context, request_user_data
from ._settings import Settings

#: ``before_send(event) -> event | None``: change an event before it is queued, or
#: return None to drop it (test traffic, a scrubbed field...).
BeforeSend = Callable[[Event], "Event | None"]
#: ``refuse(reason, message, *args)``: count an event (or a part of one) not sent, and log why.
Refuse = Callable[..., None]

MAX_URL = 2048
# A hook (before_send, on_drop) that tracks an event from inside itself runs at depth 1;
# the event it tracks may run its own before_send (depth 2), which may not track again: a
# hook that always tracks would otherwise loop for ever. ``consent`` runs on the request
# like the handler, with nothing of the sender's on the stack: depth 0.
MAX_HOOK_DEPTH = 2


class Paired(NamedTuple):
    """A paired request, read once on the request path: all its event needs."""

    event_id: str
    event_name: str
    at: float  # time.time() when the response started
    custom: Event  # the handler's props, already mapped to custom_data (a copy)
    dropped: tuple[Dropped, ...]  # props left out of ``custom``, counted when built
    chars: int  # characters of strings and keys in ``custom`` (see event_too_large)
    traits: Mapping[str, Any] | None  # identity traits, hashed when built
    request: RequestContext | RawScope  # decoded when built (see _request.context)


class _Hooks(threading.local):
    depth = 0
    # In on_drop: what it tracks is not told to on_drop when dropped in turn (a hub that
    # refuses every event would otherwise make each drop track the next, for ever).
    on_drop = False


hooks = _Hooks()


def in_hook() -> int:
    """How deep this thread is in user hooks (0: not in one)."""
    return hooks.depth


def in_on_drop() -> bool:
    """This thread runs ``on_drop`` (see :attr:`~._queue.Queued.quiet`)."""
    return hooks.on_drop


def _is_mapping(value: object) -> bool:
    # Typed callers pass mappings; this guards the untyped ones at run time.
    return isinstance(value, Mapping)


def bounded_url(url: str | None) -> str | None:
    """An overlong URL is a query string gone wild; the page without it still attributes."""
    if url is not None and len(url) > MAX_URL:
        url = url.split("?", 1)[0]
        if len(url) > MAX_URL:
            return None
    return url


class Builder:
    """Builds events for one client's settings; refusals go to ``refuse``."""

    __slots__ = ("before_send", "refuse", "settings")

    def __init__(self, settings: Settings, refuse: Refuse, before_send: BeforeSend | None = None) -> None:
        self.settings = settings
        self.refuse = refuse
        self.before_send = before_send

    def event(
        self,
        event_name: str,
        props: object,
        request: object,
        identity: Mapping[str, Any] | None,
        event_id: str | None,
        event_time: int | None,
        event_source_url: str | None,
    ) -> Event | None:
        """The body of an event the app tracks, or None (refused and counted). Never
        raises: bad input must never reach the app as an exception."""
        refuse = self.refuse
        try:
            if not isinstance(event_name, str) or not EVENT_NAME_RE.fullmatch(event_name):
                refuse("invalid", "event name must be 1-64 letters, digits or _.:- starting with a letter")
                return None
            if event_id is not None and not (isinstance(event_id, str) and EVENT_ID_RE.fullmatch(event_id)):
                refuse("invalid", "event_id must be 8-64 letters, digits, '_' or '-'")
                return None
            if props is not None and as_mapping(props) is None:
                refuse(
                    "invalid", "props must be a mapping, a dataclass or a pydantic model, not %s", type(props).__name__
                )
                return None
            if event_time is not None and (isinstance(event_time, bool) or not isinstance(event_time, int)):
                refuse("invalid", "event_time must be unix seconds (int)")
                return None
            user_data: dict[str, str] = {}
            if request is not None:
                ctx = request_context(request)
                trust = self.settings.trust_proxy
                url = ctx.url_for(trust)
                user_data = request_user_data(ctx, trust, url)  # click ids from the whole URL
                if event_source_url is None:
                    event_source_url = attribution_url(url, self.settings.kept_query_params)
            if identity:
                if not _is_mapping(identity):
                    refuse("invalid", "identity traits must be a mapping")
                    return None
                self._hash(identity, user_data)
            built = build_checked(
                site_id=self.settings.site_id,
                event_name=event_name,
                event_id=event_id or new_event_id(event_name),
                props=props,
                user_data=user_data,
                event_source_url=bounded_url(event_source_url),
                event_time=event_time,
            )
            self.count_dropped(event_name, built.dropped)
            return None if self._too_large(event_name, built.too_large) else built.event
        except Exception as exc:
            refuse("invalid", "could not build a %s event: %s", event_name, type(exc).__name__)
            return None

    def paired(self, record: Paired) -> Event | None:
        """The body of a paired request's event (on the sender), ``before_send`` applied."""
        try:
            ctx, trust = context(record.request), self.settings.trust_proxy
            page = ctx.page_url(trust)
            user_data = request_user_data(ctx, trust, page)
            if record.traits:
                self._hash(record.traits, user_data)
            event = assemble(
                self.settings.site_id,
                record.event_name,
                record.event_id,
                record.custom,  # made for this record on the request path: the event may own it
                user_data,
                bounded_url(attribution_url(page, self.settings.kept_query_params)),
                int(record.at),
                queued_at=record.at,
            )
            self.count_dropped(record.event_name, record.dropped)
            if self._too_large(record.event_name, event_too_large(event, record.chars)):
                return None
        except Exception as exc:
            self.refuse("invalid", "could not build a %s event: %s", record.event_name, type(exc).__name__)
            return None
        sent = self.before(event)
        # Marked after before_send, whatever it returned: its id came from the browser.
        return None if sent is None else HeaderEvent(sent)

    def _hash(self, traits: Mapping[str, Any], user_data: dict[str, str]) -> None:
        hashed, rejected = hash_traits(traits, default_region=self.settings.default_phone_region)
        user_data.update(hashed)
        for trait in rejected:  # the trait's name only: its value is PII
            self.refuse("invalid_trait", "dropped identity trait %r: it could not be normalised", trait)

    def _too_large(self, event_name: str, size: int | None) -> bool:
        """Refuse (count, log) an event the hub would never take: over the wire's limit."""
        if size is None:
            return False
        message = "refused a %s event of at least %d bytes: the hub takes at most %d"
        self.refuse("too_large", message, event_name, size, MAX_EVENT_BYTES)
        return True

    def count_dropped(self, event_name: str, dropped: tuple[Dropped, ...] | list[Dropped]) -> None:
        for prop in dropped:  # the prop's path only: its value may be PII
            reason = "pii_prop" if prop.reason == "pii_prop" else "invalid_prop"
            self.refuse(reason, "dropped the prop %s of a %s event: %s", prop.path, event_name, prop.reason)

    def before(self, event: Event) -> Event | None:
        """``before_send`` applied: the event, changed or not, or None (dropped, counted)."""
        hook = self.before_send
        if hook is None:
            return event
        hooks.depth += 1
        try:
            changed = hook(event)
        except Exception as exc:
            self.refuse("before_send_error", "before_send raised %s: the event is dropped", type(exc).__name__)
            return None
        finally:
            hooks.depth -= 1
        if changed is None:
            self.refuse("before_send", None)
            return None
        if not _is_mapping(changed):
            self.refuse("before_send_error", "before_send returned a %s, not an event dict", type(changed).__name__)
            return None
        return changed
