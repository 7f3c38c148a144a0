"""A one-file Django shop.

LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... gunicorn example_apps.django_app:application
LAYERSYNC_SITE_ID=... LAYERSYNC_SECRET=sk_... uvicorn example_apps.django_app:asgi_application
"""

from __future__ import annotations

import json

from django.conf import settings

from example_apps import _shop

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["layersync_middleware.django"],  # its checks run in `manage.py check`
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        # Early, so that it sees the final status: a CSRF 403 or any error sends nothing.
        "layersync_middleware.django.LayerSyncMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
    # Site id, secret key and hub URL come from LAYERSYNC_* environment variables. Without
    # them the site runs with tracking off: a warning in `manage.py check` (layersync.W003).
    LAYERSYNC={"matcher": _shop.MATCHER},
)

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from layersync_middleware import current_event  # noqa: E402


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_shop.page())


def browser_sdk(request: HttpRequest) -> FileResponse:
    sdk = _shop.browser_sdk_file()
    if sdk is None:
        raise Http404
    return FileResponse(sdk.open("rb"), content_type="text/javascript")


@csrf_exempt
def cart_add(request: HttpRequest) -> HttpResponse:
    item = json.loads(request.body or b"{}")
    if request.GET.get("fail"):
        return JsonResponse({"ok": False}, status=500)
    pending = current_event()
    if pending is not None:
        pending.update(_shop.cart_props(item.get("item_id")))
    return JsonResponse({"ok": True})


@csrf_exempt
def checkout_start(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


@csrf_exempt
def create_order(request: HttpRequest) -> HttpResponse:
    if request.GET.get("fail"):
        return JsonResponse({"error": "payment declined"}, status=402)
    order = json.loads(request.body or b"{}")
    order_id, total = _shop.new_order_id(), _shop.order_total(order.get("items", []))
    pending = current_event()
    if pending is not None:
        pending.update(order_id=order_id, value=total, currency="USD")
        pending.identify(email=order.get("email"))
    return JsonResponse({"order_id": order_id, "value": total}, status=201)


urlpatterns = [
    path("", index),
    path(_shop.LOCAL_SDK.lstrip("/"), browser_sdk),
    path("api/cart/add", cart_add),
    path("api/checkout/start", checkout_start),
    path("api/orders", create_order),
]

application = get_wsgi_application()
asgi_application = get_asgi_application()
