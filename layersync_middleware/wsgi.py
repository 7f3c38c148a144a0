"""WSGI middleware for Flask and any WSGI app.

The response iterable is returned untouched (``wsgi.file_wrapper``, streaming and
``close()`` keep working); only ``start_response`` is wrapped, to see the status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._client import LayerSync
from ._clients import resolve_client
from ._pairing import (
    HANDLED_KEY,
    WSGI_ID_KEY,
    WSGI_NAME_KEY,
    Consent,
    IsSuccess,
    Pairing,
    reset_current,
    set_current,
    wsgi_url,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class LayerSyncWSGIMiddleware:
    """``application = LayerSyncWSGIMiddleware(application)`` for any WSGI app (Flask:
    ``FlaskLayerSync(app)``): pairs what the browser SDK's default rules stamp.

    The SDK's rules read the URL as the browser sent it (``SCRIPT_NAME`` +
    ``PATH_INFO`` + query); ``matcher`` patterns match ``PATH_INFO``, the path the app
    routes on, without ``SCRIPT_NAME``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        /,
        *,
        client: LayerSync | None = None,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.client = client = resolve_client(client, options, raise_invalid=True)  # built at start-up
        self._pairing = Pairing(client, consent=consent, is_success=is_success)
        self._enabled = self._pairing.active

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self._enabled or WSGI_ID_KEY not in environ or HANDLED_KEY in environ:
            return self.app(environ, start_response)
        event_name = environ.get(WSGI_NAME_KEY)
        if event_name is None:
            return self.app(environ, start_response)
        path, url = wsgi_url(environ)
        method = environ.get("REQUEST_METHOD") or "GET"
        pending = self._pairing.start(method, path, url, environ[WSGI_ID_KEY], event_name, environ)
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
                finish(pending, environ, code)
            # Some servers and test clients choke on an explicit exc_info=None.
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        token = set_current(pending)
        try:
            return self.app(environ, start_response_wrapper)
        finally:
            reset_current(token)
