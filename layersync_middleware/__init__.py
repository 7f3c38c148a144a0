"""Server-side LayerSync tracking for Python web apps: pair the browser SDK's events
with server events, and fire events whose authority is the server."""

from __future__ import annotations

from ._client import Delivery, LayerSync, PendingEvent, current_event, shared_client
from ._match import Matcher, Rule
from ._sender import Stats
from ._settings import ConfigurationError, SecretKey, Settings
from ._transport import Outcome, Transport
from ._version import __version__
from .asgi import LayerSyncMiddleware
from .wsgi import LayerSyncWSGIMiddleware

__all__ = [
    "ConfigurationError",
    "Delivery",
    "LayerSync",
    "LayerSyncMiddleware",
    "LayerSyncWSGIMiddleware",
    "Matcher",
    "Outcome",
    "PendingEvent",
    "Rule",
    "SecretKey",
    "Settings",
    "Stats",
    "Transport",
    "__version__",
    "current_event",
    "shared_client",
]
