"""A paired route, a route that tracks, and the client's statistics."""

import dataclasses
import os

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from layersync_middleware import LayerSync, shared_client
from layersync_middleware.django.conf import load


def _client() -> LayerSync:
    return shared_client(load()[0])  # the middleware's client: one per process


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"shop": "proj"})


@csrf_exempt
def cart_add(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True, "pid": os.getpid()})


@csrf_exempt
def order(request: HttpRequest) -> JsonResponse:
    event_id = _client().track("purchase", {"value": 9.5, "currency": "EUR"}, request=request)
    return JsonResponse({"event_id": event_id})


def state(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "stats": dataclasses.asdict(_client().stats())})


urlpatterns = [
    path("", index),
    path("api/cart/add", cart_add),
    path("api/order", order),
    path("state", state),
]
