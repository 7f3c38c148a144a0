"""A process whose spool's disk fills up while the hub is down (tests/test_durable.py).

``python -m durable_apps.full_disk N CAP [max_bytes]`` tracks N events as fast as it can,
prints what it measured as JSON, waits for a line on stdin (the hub is up), flushes,
prints again and exits. ``max_bytes``: no tmpfs to fill (not root), so the spool's own
size cap makes SQLite answer SQLITE_FULL instead."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from layersync_middleware import LayerSync
from layersync_middleware._delivery import spool as _spool


def held(keeper: Any) -> int:
    """Events a pending write holds (a delete holds only its key)."""
    return sum(1 for item in list(keeper._pending.values()) if item is not None)


def main() -> None:
    n, cap = int(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        _spool.MAX_BYTES = int(sys.argv[3])
    ls = LayerSync.from_env(max_queue_size=cap)
    keeper = ls._worker._keeper
    assert keeper is not None
    took: list[float] = []
    backlog = 0  # the most events the spool's writes held back, over the second half (the disk is full by then)
    for i in range(n):
        started = time.perf_counter()
        ls.track("add_to_cart", {"n": i, "pad": "x" * 300})
        took.append(time.perf_counter() - started)
        if i >= n // 2:
            backlog = max(backlog, held(keeper))
    # Not synchronisation: a window in which the writer handles the end of the burst, so that a
    # backlog growing after it (the bug this guards against) shows in the number printed.
    time.sleep(_spool.PERSIST_WINDOW * 3)
    took.sort()
    ms = {f"p{q}": round(took[int(len(took) * q / 100) - 1] * 1000, 3) for q in (50, 99, 100)}
    print(json.dumps({"backlog": max(backlog, held(keeper)), "ms": ms}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"left": ls.flush(10), "queued": ls.stats().queued}), flush=True)
    ls.shutdown(2)


if __name__ == "__main__":
    main()
