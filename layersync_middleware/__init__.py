"""Server-side LayerSync tracking for Python web apps: pair the browser SDK's events
with server events, and fire events whose authority is the server."""

from __future__ import annotations

from ._client import BeforeSend, Delivery, LayerSync
from ._clients import shared_client
from ._delivery.core import DropReason, OnDrop, Stats
from ._delivery.lifecycle import drain, drain_on_sigterm
from ._delivery.transport import AsyncTransport, Outcome, Transport
from ._event import Event
from ._match import Matcher, Rule
from ._pairing import Consent, IsSuccess, PendingEvent, current_event
from ._settings import ConfigurationError, SecretKey, Settings
from ._version import __version__
from .asgi import LayerSyncMiddleware
from .wsgi import LayerSyncWSGIMiddleware

__all__ = [
    "AsyncTransport",
    "BeforeSend",
    "ConfigurationError",
    "Consent",
    "Delivery",
    "DropReason",
    "Event",
    "IsSuccess",
    "LayerSync",
    "LayerSyncMiddleware",
    "LayerSyncWSGIMiddleware",
    "Matcher",
    "OnDrop",
    "Outcome",
    "PendingEvent",
    "Rule",
    "SecretKey",
    "Settings",
    "Stats",
    "Transport",
    "__version__",
    "current_event",
    "drain",
    "drain_on_sigterm",
    "shared_client",
]

# Reprs, tracebacks and docs name the public path, not the private module (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("layersync_middleware._"):
        try:
            _obj.__module__ = "layersync_middleware"
        except (AttributeError, TypeError):  # aliases of builtin generics
            pass
del _name, _obj
