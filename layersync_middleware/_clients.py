"""The process's shared clients: adapters configured alike share one client, so one
sender, one connection pool and one de-duplication memory."""

from __future__ import annotations

import threading
from typing import Any

from ._client import LayerSync
from ._settings import Settings, settings_or_disabled

_shared: dict[Settings, LayerSync] = {}
_shared_lock = threading.Lock()


def shared_client(settings: Settings) -> LayerSync:
    """One client per distinct settings in this process: every adapter configured alike
    shares one sender, one connection pool and one de-duplication memory."""
    with _shared_lock:
        client = _shared.get(settings)
        if client is None:
            client = _shared[settings] = LayerSync(settings)
        return client


def resolve_client(client: LayerSync | None, options: dict[str, Any], *, raise_invalid: bool = False) -> LayerSync:
    """The client an adapter uses: the one given, or the process's one for the settings
    from the environment with ``options`` on top.

    Missing credentials disable tracking with one error log instead of breaking the
    app. Invalid settings raise when ``raise_invalid`` (the adapter is built at start-up)
    and disable otherwise (Starlette builds middleware lazily, inside the lifespan or
    the first request, where an exception answers 500 on every route). ``strict=True``
    (or ``LAYERSYNC_STRICT``) always raises."""
    if client is None:
        strict = options.get("strict") is True
        build = lambda: Settings.from_env(**options)  # noqa: E731
        return shared_client(settings_or_disabled(build, strict=strict, raise_invalid=raise_invalid))
    if options:
        raise TypeError(f"pass settings either in client= or as options, not both (got {', '.join(options)})")
    return client
