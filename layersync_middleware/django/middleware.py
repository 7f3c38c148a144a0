"""One middleware class for WSGI and ASGI Django, sync and async alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponseBase

from .._clients import shared_client
from .._delivery.lifecycle import install_sigterm_drain
from .._pairing import HANDLED_KEY, WSGI_ID_KEY, WSGI_NAME_KEY, Pairing, PendingEvent, reset_current, set_current
from . import conf

GetResponse = Callable[[HttpRequest], Any]


class LayerSyncMiddleware:
    """Pairs the requests the browser SDK stamps with its events. The SDK's rules read
    the URL as the browser sent it (``request.path``, ``SCRIPT_NAME`` included, and the
    query); ``matcher`` patterns match ``request.path_info``, as the other adapters do.
    Its place in ``MIDDLEWARE`` does not matter: a request that CSRF refuses answers
    403, and a 403 never pairs."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        settings, consent, is_success = conf.load()
        if not settings.enabled or not settings.matcher:
            raise MiddlewareNotUsed("LayerSync is disabled, or LAYERSYNC['sdk_rules'] is off with no matcher")
        self.get_response = get_response
        self.client = shared_client(settings)
        self.async_mode = iscoroutinefunction(get_response)
        self._pairing = Pairing(self.client, consent=consent, is_success=is_success, can_await=self.async_mode)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django has no lifespan to drain on, and uvicorn ends with SIGTERM's default action.
            install_sigterm_drain()

    def _headers(self, request: HttpRequest) -> tuple[str, str, str, str, str] | None:
        """``(method, route path, URL, id, name)`` of a request with pairing headers."""
        meta = request.META
        if WSGI_ID_KEY not in meta or HANDLED_KEY in meta or WSGI_NAME_KEY not in meta:
            return None
        scope = getattr(request, "scope", None)
        if isinstance(scope, dict) and HANDLED_KEY in scope:  # the ASGI middleware got it first
            return None
        query = meta.get("QUERY_STRING")
        url = f"{request.path}?{query}" if query else request.path
        return request.method or "GET", request.path_info, url, meta[WSGI_ID_KEY], meta[WSGI_NAME_KEY]

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        headers = self._headers(request)
        pending = None if headers is None else self._pairing.start(*headers, request)
        if pending is None:
            return self.get_response(request)
        request.META[HANDLED_KEY] = True
        token = set_current(pending)
        try:
            response: HttpResponseBase = self.get_response(request)
        finally:
            reset_current(token)
        self._pairing.finish(pending, request, response.status_code)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        headers = self._headers(request)
        pending: PendingEvent | None = None
        if headers is not None:
            pending = await self._pairing.astart(*headers, request)
        if pending is None:
            return await get_response(request)
        request.META[HANDLED_KEY] = True
        token = set_current(pending)
        try:
            response = await get_response(request)
        finally:
            reset_current(token)
        await self._pairing.afinish(pending, request, response.status_code)
        return response
