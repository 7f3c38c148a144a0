"""Draining the sender however the process ends.

A normal exit runs the ``atexit`` drain (:func:`._worker.drain_all`). These do not:

* **SIGTERM with the default action** (a script, a job runner, a container stop): the
  process dies at once. A client made in the main thread installs a SIGTERM handler
  that drains within ``shutdown_timeout`` and then dies of SIGTERM as the default would.
* **Servers that restore the default handler and raise SIGTERM again** after their own
  graceful shutdown (uvicorn 0.29+; Django under uvicorn has no lifespan for the
  middleware to drain on). So that LayerSync's handler stays first whatever is
  installed after it, ``signal.signal`` and ``signal.getsignal`` are wrapped for
  SIGTERM only: a handler set later (the server's, the app's, the default again) is
  the one LayerSync's hands the signal to, and is what ``getsignal`` reports. A
  Python handler is called at once and decides what SIGTERM means (the exit that
  follows drains); ``SIG_IGN`` stays ignored; only the default action gets the drain
  first. A handler installed from C, or SIGTERM ignored before the client was made,
  is left alone.
* **Children that leave with ``os._exit``**: Celery prefork (billiard) children, which
  :func:`drain_on_celery_shutdown` covers; ``multiprocessing`` children, drained by a
  multiprocessing finalizer registered automatically; RQ work horses and anything
  else, which call :func:`drain` at the end of the work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from ._log import logger

_SUPPORTED = sys.platform != "win32" and hasattr(signal, "SIGTERM")
_SIGTERM: int = getattr(signal, "SIGTERM", 15)
_real_signal = signal.signal
_real_getsignal = signal.getsignal


class _State:
    installed = False  # signal.signal is wrapped
    chained: Any = signal.SIG_DFL  # what SIGTERM means besides the drain
    draining = False
    mp_final_pid = 0  # the process whose multiprocessing exit drains


_state = _State()


def drain(timeout: float | None = None) -> int:
    """Deliver what every LayerSync client of this process has queued, within ``timeout``
    seconds (default: the clients' ``shutdown_timeout``); with a spool, what is left is
    kept there for another process or the next start. Logs once how many events were not
    delivered, and returns that number. Never raises; the clients stay usable.

    For processes that end without running ``atexit``: an RQ job (call it last in the
    job), a child that leaves with ``os._exit``."""
    from ._worker import drain_all  # _worker imports this module

    try:
        return drain_all(timeout)
    except Exception:
        logger.exception("layersync drain error")
        return 0


# -- Celery ---------------------------------------------------------------------------------------
def drain_on_celery_shutdown() -> None:
    """Drain in every Celery worker process when it ends: prefork pool children (billiard
    ends them with ``os._exit``, e.g. after ``--max-tasks-per-child``) send
    ``worker_process_shutdown`` just before; the main process (solo and threads pools)
    sends ``worker_shutdown``. Call it once where your Celery app is made."""
    from celery import signals  # type: ignore[import-untyped]  # the [celery] extra

    signals.worker_process_shutdown.connect(_on_celery_shutdown, weak=False, dispatch_uid="layersync-drain-process")
    signals.worker_shutdown.connect(_on_celery_shutdown, weak=False, dispatch_uid="layersync-drain-worker")


def _on_celery_shutdown(sender: object = None, **kwargs: object) -> None:
    drain()


# -- multiprocessing ------------------------------------------------------------------------------
class _Token:
    """A key for multiprocessing's after-fork registry (it holds its keys weakly)."""


_MP_TOKEN = _Token()


def watch_multiprocessing(*, forked: bool = False) -> None:
    """Drain when a ``multiprocessing`` child ends: its bootstrap runs the finalizers and
    then leaves with ``os._exit``. In a forked child (``forked``) the finalizer registry is
    cleared by the bootstrap after this runs, so the finalizer is registered from
    multiprocessing's own after-fork hook; in a child already running (spawn,
    forkserver), at once."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or _state.mp_final_pid == os.getpid():
        return
    if forked:
        util.register_after_fork(_MP_TOKEN, _register_mp_finalizer)
        return
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        _register_mp_finalizer(_MP_TOKEN)


def _register_mp_finalizer(_token: object) -> None:
    util = sys.modules.get("multiprocessing.util")
    if util is None or _state.mp_final_pid == os.getpid():
        return
    _state.mp_final_pid = os.getpid()
    util.Finalize(None, drain, exitpriority=10)


# -- SIGTERM ----------------------------------------------------------------------------------------
def watch_sigterm() -> None:
    """Install the SIGTERM drain; from the main thread only (elsewhere a no-op: the next
    client made, or worker started, in the main thread installs it)."""
    if not _SUPPORTED or threading.current_thread() is not threading.main_thread():
        return
    try:
        current = _real_getsignal(_SIGTERM)
        if current is _on_sigterm:
            return
        if current is None or current == signal.SIG_IGN:
            return  # installed from C, or ignored on purpose: not ours to touch
        _real_signal(_SIGTERM, _on_sigterm)
    except (ValueError, OSError, TypeError):  # not the main interpreter
        return
    _state.chained = current
    if not _state.installed:
        _state.installed = True
        signal.signal = _signal
        signal.getsignal = _getsignal


def unwatch_sigterm() -> None:
    """Remove the SIGTERM drain and the wrappers (main thread only)."""
    if not _state.installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal = _real_signal
    signal.getsignal = _real_getsignal
    _state.installed = False
    if _real_getsignal(_SIGTERM) is _on_sigterm:
        _real_signal(_SIGTERM, _state.chained)


def _ours() -> bool:
    return _state.installed and _real_getsignal(_SIGTERM) is _on_sigterm


def _signal(signalnum: Any, handler: Any) -> Any:
    """``signal.signal``, except that for SIGTERM LayerSync's handler stays installed
    and ``handler`` becomes the one it hands the signal to."""
    if signalnum != _SIGTERM or threading.current_thread() is not threading.main_thread() or not _ours():
        return _real_signal(signalnum, handler)
    if handler is _on_sigterm:
        return _state.chained
    if not callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN):
        return _real_signal(signalnum, handler)  # raises the TypeError it always did
    previous, _state.chained = _state.chained, handler
    return previous


def _getsignal(signalnum: Any) -> Any:
    if signalnum == _SIGTERM and _ours():
        return _state.chained
    return _real_getsignal(signalnum)


_signal.__doc__ = _real_signal.__doc__
_getsignal.__doc__ = _real_getsignal.__doc__


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    chained = _state.chained
    if callable(chained):  # the app's or the server's: it decides; the exit that follows drains
        chained(signum, frame)
        return
    if chained == signal.SIG_IGN:
        return
    if not _state.draining:  # a second SIGTERM during the drain means now
        _state.draining = True
        _drain_in_thread()
    _real_signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # dies of SIGTERM, as it would have without us


def _drain_in_thread() -> None:
    """Drain from another thread and wait for it: this handler runs between two bytecodes
    of the main thread, which may hold the sender's lock (in the middle of a ``track()``)."""
    from ._worker import exit_budget

    budget = exit_budget()
    if budget <= 0:
        return
    thread = threading.Thread(target=drain, name="layersync-drain", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        return
    thread.join(budget + 1.0)  # the drain keeps its own deadline; this is the backstop
