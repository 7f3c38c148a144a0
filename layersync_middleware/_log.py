"""The ``layersync`` logger, and warnings that say a thing once a minute, not per request.

Whatever reaches a log line from a request (a path, a header) is the client's text:
``safe()`` escapes every character that could end a line, move the cursor or reorder
text in a terminal or a log viewer, and bounds the length, so that a ``%0a`` in a URL
cannot write a line of its own. ``RateLimitedLog`` applies it to every argument.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time

logger = logging.getLogger("layersync")
# A library says nothing unless the app configured logging (or asked for console_log).
logger.addHandler(logging.NullHandler())

_INTERVAL = 60.0
_ARG_LIMIT = 200
_OBJECT_LIMIT = 1000  # exceptions and other objects: their own text, still bounded


def _escape(text: str) -> str:
    if text.isprintable():  # the common case: one C-level scan
        return text
    # Not printable: C0/C1 controls (CR, LF, NUL, ESC, NEL), U+2028/2029, bidi and
    # other format characters, unassigned code points. The escape is repr()'s.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def safe(value: object, limit: int = _ARG_LIMIT) -> str:
    """``value`` as text fit for one log line: control characters escaped, at most
    ``limit`` characters of it kept (the rest summarised as ``...(+N chars)``)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return f"{_escape(text[:limit])}...(+{len(text) - limit} chars)"
    return _escape(text)


class _Escaped:
    """Formats an arbitrary object through ``safe()`` under both ``%s`` and ``%r``."""

    __slots__ = ("_obj",)

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __str__(self) -> str:
        return safe(str(self._obj), _OBJECT_LIMIT)

    def __repr__(self) -> str:
        return safe(repr(self._obj), _OBJECT_LIMIT)


def _clean(arg: object) -> object:
    if isinstance(arg, str):
        return safe(arg)
    if arg is None or isinstance(arg, (int, float)):  # %d and %.1f need the number itself
        return arg
    return _Escaped(arg)


class RateLimitedLog:
    """``warn(key, msg)`` logs at most once per ``interval`` for each key, then says how many
    were held back. Safe from any thread; costs a dict lookup when suppressed. Every
    argument is passed through ``safe()``: the message is ours, the arguments are not."""

    def __init__(self, log: logging.Logger = logger, interval: float = _INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def warn(self, key: str, msg: str, *args: object, level: int = logging.WARNING) -> bool:
        """Log, unless ``key`` was logged within the interval; True when it was logged."""
        now = time.monotonic()
        if self._pid != os.getpid():  # a lock copied by fork may be held by a thread that is gone
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            last, held = self._last.get(key, (-1e18, 0))
            if now - last < self._interval:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        args = tuple(_clean(a) for a in args)
        msg = _escape(msg)  # callers build some messages with f-strings
        if held:
            msg += " (%d more like this in the last %ds)"
            args = (*args, held, int(self._interval))
        self._log.log(level, msg, *args)
        return True

    def debug(self, msg: str, *args: object) -> None:
        """Log at DEBUG, escaped like :meth:`warn`, without a limit (when DEBUG is on)."""
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(_escape(msg), *(_clean(a) for a in args))


_console_loggers = itertools.count()


def client_logger(console: bool) -> logging.Logger:
    """The logger a client logs through: ``layersync``, or with ``console_log`` a child of
    it that also writes to stderr, as the Node option does. Only that client's lines go
    there, and only while the app has not configured logging: once it has, the lines
    reach the app's handlers through ``layersync``, once."""
    if not console:
        return logger
    child = logging.getLogger(f"layersync.console.{next(_console_loggers)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[LayerSync] %(levelname)s %(message)s"))
    handler.addFilter(_app_has_no_logging)
    child.addHandler(handler)
    child.setLevel(logging.INFO)
    return child


def _app_has_no_logging(record: logging.LogRecord) -> bool:
    return not logging.getLogger().handlers


def log_always(log: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log a line that must be seen even in an app that configured no logging (tracking
    disabled by a setting, events lost at exit): to ``log`` when a handler takes it,
    else to stderr through Python's last-resort handler, as an exception would be."""
    if _handled(log, level) or not log.isEnabledFor(level):
        log.log(level, msg, *args)
        return
    record = log.makeRecord(log.name, level, __file__, 0, msg, args, None)
    (logging.lastResort or logging.StreamHandler()).handle(record)


def _handled(log: logging.Logger, level: int) -> bool:
    """Whether a record at ``level`` reaches a handler other than a NullHandler."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) and level >= h.level for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False
