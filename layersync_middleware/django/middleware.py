"""One middleware class for WSGI and ASGI Django, sync and async alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponseBase

from .._client import PendingEvent, reset_current, set_current, shared_client
from .._pairing import HANDLED_KEY, Pairing
from .._request import RequestContext, request_context
from . import conf

GetResponse = Callable[[HttpRequest], Any]


class LayerSyncMiddleware:
    """Pairs matched requests with the browser SDK's events. Patterns match
    ``request.path_info`` (without ``SCRIPT_NAME``), as the other adapters do."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        settings, consent, is_success = conf.read()
        if not settings.enabled or not settings.matcher:
            raise MiddlewareNotUsed("LayerSync is disabled or LAYERSYNC['matcher'] is empty")
        self.get_response = get_response
        self.client = shared_client(settings)
        self._pairing = Pairing(self.client, consent=consent, is_success=is_success)
        self._match = settings.matcher.match
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def _start(self, request: HttpRequest) -> tuple[PendingEvent, RequestContext] | None:
        meta = request.META
        if "HTTP_X_LAYERSYNC_EVENT_ID" not in meta or meta.get(HANDLED_KEY):
            return None
        scope = getattr(request, "scope", None)
        if isinstance(scope, dict) and scope.get(HANDLED_KEY):  # the ASGI middleware got it first
            return None
        rule = self._match(request.path_info)
        if rule is None:
            return None
        ctx = request_context(request)
        pending = self._pairing.start(ctx, rule, request)
        if pending is None:
            return None
        meta[HANDLED_KEY] = True
        return pending, ctx

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        started = self._start(request)
        if started is None:
            return self.get_response(request)
        pending, ctx = started
        token = set_current(pending)
        try:
            response: HttpResponseBase = self.get_response(request)
        finally:
            reset_current(token)
        self._pairing.finish(pending, ctx, response.status_code)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        started = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        if started is None:
            return await get_response(request)
        pending, ctx = started
        token = set_current(pending)
        try:
            response = await get_response(request)
        finally:
            reset_current(token)
        self._pairing.finish(pending, ctx, response.status_code)
        return response
