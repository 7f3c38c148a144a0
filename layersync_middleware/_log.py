"""The ``layersync`` logger, and warnings that say a thing once a minute, not per request."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

logger = logging.getLogger("layersync")

_INTERVAL = 60.0


class RateLimitedLog:
    """``warn(key, msg)`` logs at most once per ``interval`` for each key, then says how many
    were held back. Safe from any thread; costs a dict lookup when suppressed."""

    def __init__(self, log: logging.Logger = logger, interval: float = _INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def warn(self, key: str, msg: str, *args: object, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if self._pid != os.getpid():  # a lock copied by fork may be held by a thread that is gone
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            last, held = self._last.get(key, (-1e18, 0))
            if now - last < self._interval:
                self._last[key] = (last, held + 1)
                return
            self._last[key] = (now, 0)
        if held:
            msg += " (%d more like this in the last %ds)"
            args = (*args, held, int(self._interval))
        self._log.log(level, msg, *args)


_console_handler: logging.Handler | None = None


def enable_console_log() -> None:
    """``console_log=True``: the ``layersync`` logs go to stderr, as the Node option does."""
    global _console_handler
    if _console_handler is not None:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[LayerSync] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    _console_handler = handler
