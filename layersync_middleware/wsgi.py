"""WSGI middleware for Flask and any WSGI app.

The response iterable is returned untouched (``wsgi.file_wrapper``, streaming and
``close()`` keep working); only ``start_response`` is wrapped, to see the status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._client import LayerSync, reset_current, set_current
from ._pairing import HANDLED_KEY, Consent, IsSuccess, Pairing, resolve_client
from ._request import request_context

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_ID_KEY = "HTTP_X_LAYERSYNC_EVENT_ID"


def _route_path(environ: dict[str, Any]) -> str:
    path: str = environ.get("PATH_INFO") or "/"
    try:
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path


class LayerSyncWSGIMiddleware:
    """``app.wsgi_app = LayerSyncWSGIMiddleware(app.wsgi_app, matcher=[...])``.

    Patterns match ``PATH_INFO``: the path the app routes on, without ``SCRIPT_NAME``.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        client: LayerSync | None = None,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.client = client = resolve_client(client, options)
        self._pairing = Pairing(client, consent=consent, is_success=is_success)
        self._match = client.settings.matcher.match
        self._enabled = self._pairing.active

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self._enabled or _ID_KEY not in environ or environ.get(HANDLED_KEY):
            return self.app(environ, start_response)
        rule = self._match(_route_path(environ))
        if rule is None:
            return self.app(environ, start_response)
        ctx = request_context(environ)
        pending = self._pairing.start(ctx, rule, environ)
        if pending is None:
            return self.app(environ, start_response)
        environ[HANDLED_KEY] = True
        finish = self._pairing.finish
        started = False

        def start_response_wrapper(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal started
            if not started:
                started = True
                try:
                    code = int(status.split(" ", 1)[0])
                except ValueError:
                    code = 500
                finish(pending, ctx, code)
            # Some servers and test clients choke on an explicit exc_info=None.
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        token = set_current(pending)
        try:
            return self.app(environ, start_response_wrapper)
        finally:
            reset_current(token)
