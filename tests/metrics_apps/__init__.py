"""Apps for tests/test_metrics.py: a paired route, /metrics mounted as the README shows,
and /stats with the serving process's ``stats()``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from layersync_middleware import LayerSync


def ok() -> dict[str, bool]:
    return {"ok": True}


def worker_stats(ls: LayerSync) -> dict[str, Any]:
    """This process's id and figures: a test sums them over the workers."""
    return {"pid": os.getpid(), "stats": dataclasses.asdict(ls.stats())}
