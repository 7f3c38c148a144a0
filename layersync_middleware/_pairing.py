"""What every middleware adapter does, without any framework: decide whether a request
pairs with a browser event, and send the paired event once the response succeeded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._client import LayerSync, PendingEvent, shared_client
from ._log import RateLimitedLog
from ._match import Rule
from ._request import RequestContext
from ._settings import Settings

# Set in the ASGI scope / WSGI environ of a request whose pairing is already handled,
# so that two layers installed (say ASGI and Django) send one event.
HANDLED_KEY = "layersync.handled"
_ID_HEADER = b"x-layersync-event-id"

Consent = Callable[[Any], bool]
IsSuccess = Callable[[int], bool]


def resolve_client(client: LayerSync | None, options: dict[str, Any]) -> LayerSync:
    """The client an adapter uses: the one given, or the process's one for the settings
    from the environment with ``options`` on top."""
    if client is None:
        return shared_client(Settings.from_env(**options))
    if options:
        raise TypeError(f"pass settings either in client= or as options, not both (got {', '.join(options)})")
    return client


def default_is_success(status: int) -> bool:
    """A failed add-to-cart is not a conversion: only 2xx and 3xx pair."""
    return 200 <= status < 400


class Pairing:
    __slots__ = ("_log", "client", "consent", "is_success", "matcher")

    def __init__(
        self, client: LayerSync, *, consent: Consent | None = None, is_success: IsSuccess | None = None
    ) -> None:
        if consent is not None and not callable(consent):
            raise TypeError("consent must be a callable taking the request and returning a bool")
        if is_success is not None and not callable(is_success):
            raise TypeError("is_success must be a callable taking a status code and returning a bool")
        self.client = client
        self.matcher = client.settings.matcher
        self.consent = consent
        self.is_success = is_success or default_is_success
        self._log = RateLimitedLog()

    @property
    def active(self) -> bool:
        return self.client.settings.enabled and bool(self.matcher)

    def start(self, ctx: RequestContext, rule: Rule, native: object) -> PendingEvent | None:
        """The pending event for a matched request, or None. Never raises."""
        try:
            pairing = self.client.read_pairing(ctx, rule)
            if pairing is None:
                return None
            if self.consent is not None and not self.consent(native):
                return None
            return PendingEvent(*pairing)
        except Exception as exc:
            self._internal_error(exc)
            return None

    def finish(self, pending: PendingEvent, ctx: RequestContext, status: int) -> None:
        """Queue the paired event if the response succeeded. Never raises, never waits."""
        try:
            if pending.cancelled or not self.is_success(status):
                return
            event = self.client.build(
                pending.event_name,
                pending.props,
                request=ctx,
                identity=pending.traits or None,
                event_id=pending.event_id,
                paired=True,
            )
            self.client.submit(event)
        except Exception as exc:
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        self.client.sender.count_refused("internal_error")
        self._log.warn("internal", "layersync middleware error (the request went on): %r", exc)


def asgi_has_pairing(headers: Any) -> bool:
    """A quick scan of ASGI headers for the pairing id header."""
    return any(name.lower() == _ID_HEADER for name, _ in headers)
