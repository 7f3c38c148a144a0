"""Tracks purchases one after another, printing each id once ``track()`` returned it;
then waits to be killed. ``python -m durable_apps.burst N``."""

from __future__ import annotations

import sys
import time

from layersync_middleware import LayerSync

ls = LayerSync.from_env()
for i in range(int(sys.argv[1])):
    print(ls.track("purchase", {"n": i}), flush=True)
    time.sleep(0.001)  # the scenario: a burst spread over time, so the SIGKILL lands mid-burst
time.sleep(120)  # the scenario: alive until the test kills it
