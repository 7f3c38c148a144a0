"""The Django stack of tests/e2e/sdk_apps.py: no matcher, a catch-all view, the page at
``/_page``, mounted under ``/api`` too (``SCRIPT_NAME`` for WSGI, ``root_path`` for ASGI).

gunicorn e2e.sdk_django:wsgi_app    /    uvicorn e2e.sdk_django:asgi_app  (PYTHONPATH=.:tests)
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="e2e-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["layersync_middleware.django"],
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "layersync_middleware.django.LayerSyncMiddleware",
    ],
    LAYERSYNC={},  # no matcher: what the browser SDK stamps pairs; the rest from LAYERSYNC_*
)

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import re_path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from e2e.sdk_apps import MOUNT, page, record, sdk_source, stats  # noqa: E402
from werkzeug.middleware.dispatcher import DispatcherMiddleware  # noqa: E402

from layersync_middleware._clients import shared_client  # noqa: E402
from layersync_middleware.django import conf  # noqa: E402


@csrf_exempt
def shop(request: HttpRequest) -> HttpResponse:
    if request.path_info == "/_page":
        return HttpResponse(page())
    if request.path_info == "/_sdk.js":
        return HttpResponse(sdk_source(), content_type="text/javascript")
    if request.path_info == "/_stats":
        return JsonResponse(stats(shared_client(conf.load()[0])))
    query = request.META.get("QUERY_STRING")
    record(request.method or "GET", request.path + (f"?{query}" if query else ""))
    return JsonResponse({"ok": True})


urlpatterns = [re_path(r"^.*$", shop)]

_wsgi = get_wsgi_application()
wsgi_app = DispatcherMiddleware(_wsgi, {MOUNT: _wsgi})
_asgi = get_asgi_application()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's ASGI app, and mounted under /api as Starlette's Mount does: the path
    kept whole, ``root_path`` the prefix."""
    if scope["type"] == "http" and (scope["path"] == MOUNT or scope["path"].startswith(MOUNT + "/")):
        scope = {**scope, "root_path": scope.get("root_path", "") + MOUNT}
    await _asgi(scope, receive, send)
