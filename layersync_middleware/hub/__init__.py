"""A small LayerSync-compatible hub: the demo's and the tests' server, and a local
"test events" screen for developers (``layersync hub``). Needs the ``hub`` extra,
except ``HubSite`` and ``DEMO_SITE`` (the demo credentials, defined once in
:mod:`.sites`).

Routes and who may call them
----------------------------
* ``POST /api/v1/events/browser[/batch]``, ``GET /api/v1/config/platforms``: the
  browser SDK's; CORS for any origin, publishable key.
* ``POST /api/v1/events/server[/batch]``: the server SDK's; secret key, no CORS.
* ``GET /`` (the page, with ``/page.js``), ``GET /api/hub/events``, ``/api/hub/groups``,
  ``/api/hub/group``, ``/api/hub/dashboard``, ``/api/hub/faults`` (inspection) and
  ``POST /api/hub/faults``, ``POST /api/hub/reset`` (control): only from a loopback
  peer, the machine's own address, or one in ``allowed_peers`` (``--allow-peer``), so
  a hub bound to ``0.0.0.0`` shows and hands its controls to this machine only;
  same-origin only, and only under a loopback Host (``localhost``, ``127.0.0.1``,
  ``[::1]``) or one passed as ``allowed_hosts`` (``--allow-host``); otherwise 403.
  Control routes take ``Content-Type: application/json`` and a JSON object (415/400
  otherwise): ``{}`` for reset.

Lists and the store
-------------------
``/api/hub/events`` and ``/api/hub/groups`` return the newest ``limit`` (default 200,
at most 1000) older than the ``before`` cursor, with ``next`` (the next page's
``before``, or null) and ``truncated``. Groups also take ``name``, ``verdict``,
``since``, ``until`` and carry each id's verdict (:mod:`.platforms`);
``/api/hub/group?event_id=`` explains one id; ``/api/hub/dashboard`` gives totals with
Meta's definitions. The store keeps at most ``max_db_bytes`` (``--max-db-mb``, 64 MiB)
of event bodies, evicting the oldest; ``store.evicted`` in the groups answer counts them.

Fault injection
---------------
``POST /api/hub/faults`` with a JSON object (every field optional; unknown fields,
wrong types and out-of-range values are a 400 naming them); ``GET`` shows the faults
in force plus ``hits``; ``{"mode": null}`` or a reset clears them::

    {"mode": "500" | "429" | "hang" | "drip" | "reset" | "drop" | null,
     "target": "server" | "browser" | "all",  # which ingest endpoints (default server)
     "rate": 1.0,          # share of the eligible requests hit, 0-1
     "every": 1,           # hit one eligible request in N (2: fail, ok, fail, ok: flapping)
     "count": null,        # hit at most N requests, then behave
     "retry_after": 1,     # 429: the Retry-After header, whole seconds 0-86400
     "hang_seconds": 30,   # hang: how long before the hub answers 503 (0-600)
     "drip_ms": 1000}      # drip: the pause between two bytes, 1-10000 ms

* ``500``: answers 500; ``429``: answers 429 with ``Retry-After``.
* ``hang``: reads the request, answers nothing for ``hang_seconds`` (then 503).
* ``drip``: handles the request for real (the event is stored), then writes the
  whole response, status line and headers included, one byte every ``drip_ms``, so
  no per-read timeout ever trips (under another server than uvicorn: headers at
  once, body dripped).
* ``reset``: reads the request, then closes the connection with a TCP RST
  (``ECONNRESET`` on the client's read).
* ``drop``: sends headers announcing 100 bytes and 5 of them, then closes (FIN).
* the hub down (connection refused): ``HubServer.stop()``, then
  ``HubServer(app, port=old_port).start()`` brings the same hub, data included, back.

None of the faults stores the event except ``drip``. Faults apply to ``POST``
ingest requests only, before their key is checked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .sites import DEMO_SITE, HubSite

if TYPE_CHECKING:
    from .app import HubApp, create_hub
    from .faults import Faults
    from .server import HubServer
    from .store import Store

# The rest needs the hub extra (starlette, uvicorn): imported on first use, so that
# DEMO_SITE stays importable without it.
_LAZY = {
    "Faults": ".faults",
    "HubApp": ".app",
    "create_hub": ".app",
    "HubServer": ".server",
    "Store": ".store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEMO_SITE", "Faults", "HubApp", "HubServer", "HubSite", "Store", "create_hub"]
