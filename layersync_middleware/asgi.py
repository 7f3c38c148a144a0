"""Pure ASGI middleware for Starlette, FastAPI and any ASGI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._client import LayerSync
from ._clients import resolve_client
from ._delivery.lifecycle import adrain, exit_over
from ._pairing import HANDLED_KEY, Consent, IsSuccess, Pairing, asgi_pairing, asgi_url, current_pending
from ._request import RawScope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LayerSyncMiddleware:
    """Pairs the requests the browser SDK stamps with its events.

    ``app.add_middleware(LayerSyncMiddleware)`` pairs what the SDK's default rules stamp
    and reads the settings from ``LAYERSYNC_*`` environment variables; pass ``client=``
    to share a client you made. The SDK's rules read the URL as the browser sent it
    (``root_path`` + ``path`` + query); ``matcher`` patterns match the path the app
    routes on (without ``root_path``). ``consent`` and ``is_success`` may be ``async def``.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        client: LayerSync | None = None,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
        drain_timeout: float | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.client = client = resolve_client(client, options)
        self._pairing = Pairing(client, consent=consent, is_success=is_success, can_await=True)
        self._enabled = self._pairing.active
        self._drain_timeout = drain_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:  # websockets pass straight through
                await self.app(scope, receive, send)
            return
        # The cheapest test first: most requests carry no pairing header.
        if not self._enabled or HANDLED_KEY in scope:
            await self.app(scope, receive, send)
            return
        read = asgi_pairing(scope["headers"])
        if read is None:
            await self.app(scope, receive, send)
            return
        event_id, event_name, headers = read
        pairing = self._pairing
        path, url = asgi_url(scope)
        method = scope.get("method") or "GET"
        if pairing.consent is None:  # no coroutine to create and await
            pending = pairing.start(method, path, url, event_id, event_name, scope)
        else:
            pending = await pairing.astart(method, path, url, event_id, event_name, scope)
        if pending is None:
            await self.app(scope, receive, send)
            return
        scope[HANDLED_KEY] = True
        # The request is read now, once, as it came in: the event is built from this.
        pending.read = RawScope(
            tuple(headers),
            scope.get("client"),
            scope.get("scheme"),
            scope.get("server"),
            scope["path"],
            scope.get("root_path"),
            scope.get("raw_path"),
            scope.get("query_string"),
        )

        async def send_wrapper(message: Message) -> None:
            # The status is known here: queue the event now, before any body is streamed.
            if message["type"] == "http.response.start":
                if pairing.sync_success:
                    pairing.finish(pending, scope, message["status"])
                else:
                    await pairing.afinish(pending, scope, message["status"])
            await send(message)

        token = current_pending.set(pending)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            try:
                current_pending.reset(token)
            except ValueError:  # reset from another context (a server that switches them): nothing to undo
                pass

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                exit_over()  # the app lives (again, in a test's TestClient): the next exit gets a full budget
            elif message["type"] == "lifespan.shutdown.complete":
                # After the app's own shutdown handlers, which may still track events. The
                # server's one shutdown hook: every client of the process drains here, this
                # one first, on its loop (uvicorn then dies of SIGTERM, and atexit does not
                # run). The drains that follow (atexit) share this one's budget.
                await adrain(self._drain_timeout, self.client._worker)
            await send(message)

        return lifespan_send
