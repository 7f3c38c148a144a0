"""What the fleet's two web apps share: the paired route's answer and the sender's state."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from layersync_middleware import LayerSync
from layersync_middleware._delivery import dedup as _dedup

MATCHER = ["/api/cart/*"]


def answer() -> dict[str, Any]:
    return {"ok": True, "pid": os.getpid()}  # which worker answered (two-worker tests)


def state(client: LayerSync) -> dict[str, Any]:
    stats = dataclasses.asdict(client.stats())
    # stats().dedup_fallbacks is the process's _dedup.fallbacks() where the client shows it.
    fallbacks = stats.get("dedup_fallbacks", _dedup.fallbacks())
    return {"pid": os.getpid(), "stats": stats, "dedup_fallbacks": fallbacks}
