"""Draining the sender however the process ends, within one budget.

Every way a process ends has its hook, and every hook ends in :func:`drain_all`:

* **A normal exit**: the ``atexit`` drain.
* **An ASGI server's lifespan shutdown**: the ASGI middleware drains every client of the
  process there (uvicorn then raises SIGTERM again with the default action: no ``atexit``).
* **Celery**: :func:`drain_on_celery_shutdown`.
* **``multiprocessing`` children**, which leave with ``os._exit``: a finalizer registered
  automatically. RQ work horses and anything else ending with ``os._exit``: :func:`drain`,
  called last.
* **SIGTERM that no server catches** (a script or job runner stopped by a container stop;
  Django under uvicorn, which has no lifespan for the middleware to drain on):
  :func:`drain_on_sigterm`, called by the app or by the adapter that knows it is needed
  (the Django middleware under ASGI). Creating a client changes no global.

**One budget per exit.** A server may run several of these hooks (uvicorn and granian the
lifespan and then ``atexit``; hypercorn one more), so the first drain of an exit starts the
process's budget (``shutdown_timeout``), the drains that follow share its deadline, and the
events left undelivered are logged once. An exit is over when the process shows it goes
on: an ASGI lifespan starts again, or no drain starts within one more budget after the
deadline (a ``drain()`` at the end of each job of a long-lived worker gets a budget each).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol

from .._log import log_always, logger
from .._settings import Settings
from .core import Sender


class Drained(Protocol):
    """What the exit drain needs of a driver (:mod:`.drivers` registers each in :data:`WORKERS`)."""

    _finalizing: bool

    @property
    def _pid(self) -> int: ...

    @property
    def _keeper(self) -> object | None: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def sender(self) -> Sender: ...

    def _after_fork(self) -> None: ...

    def _drop_transports(self) -> None: ...

    def _shutdown(self, timeout: float | None) -> tuple[int, int]: ...

    async def ashutdown(self, timeout: float | None = None) -> int: ...


#: Every driver of the process, drained at exit (weakly held: a client that is gone is not).
WORKERS: weakref.WeakSet[Drained] = weakref.WeakSet()

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


# -- one budget per exit ------------------------------------------------------------------------------
class _Exit:
    pid = 0  # the process whose exit this is (a forked child starts its own)
    deadline = 0.0  # time.monotonic() by which every drain of this exit is done
    budget = 0.0
    reported = 0  # undelivered events logged so far in this exit


_exit = _Exit()


def exit_deadline(budget: float) -> tuple[float, float]:
    """(deadline, budget) of this process's exit: the first drain starts one of ``budget``
    seconds; the drains that follow share its deadline."""
    now = time.monotonic()
    # Hooks of one exit run back to back; one that starts a budget (at least a second)
    # after the deadline belongs to a later exit.
    if _exit.pid != os.getpid() or now > _exit.deadline + max(_exit.budget, 1.0):
        _exit.pid, _exit.deadline, _exit.budget, _exit.reported = os.getpid(), now + budget, budget, 0
    return _exit.deadline, _exit.budget


def exit_over() -> None:
    """The process goes on (an ASGI lifespan started again): the next drain starts a new exit."""
    _exit.pid = 0


def first_to_say(left: int) -> bool:
    """Whether a drain leaving ``left`` events undelivered should say so: once per exit,
    and again only if more are left than were said."""
    if left <= _exit.reported:
        return False
    _exit.reported = left
    return True


def drain(timeout: float | None = None) -> int:
    """Deliver what every LayerSync client of this process has queued, within ``timeout``
    seconds (default: the clients' ``shutdown_timeout``) and within what is left of this
    exit's budget, which the other drains of the exit share (lifespan, ``atexit``,
    SIGTERM); with a spool, what is left is kept there for another process or the next
    start. Logs how many events were not delivered, once per exit, and returns that
    number. Never raises; the clients stay usable.

    For processes that end without running ``atexit``: an RQ job (call it last in the
    job), a child that leaves with ``os._exit``."""
    try:
        return drain_all(timeout)
    except Exception:
        logger.exception("layersync drain error")
        return 0


async def adrain(timeout: float | None, first: Drained) -> int:
    """:func:`drain` from an event loop, ``first`` (the ASGI middleware's client) on it."""
    try:
        return await adrain_all(timeout, first)
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
def drain_on_sigterm() -> bool:
    """Drain when the process gets SIGTERM, for processes no server shuts down: a script or
    a job runner stopped with SIGTERM (a container stop), Django or any ASGI app without
    the middleware's lifespan under uvicorn (which, after its graceful shutdown, restores
    SIGTERM's default action and raises it again). Call it once, from the main thread, at
    start-up; returns whether the drain is installed.

    A handler installed before or after it (the server's, the app's, the default again)
    is called at once and decides what SIGTERM means; the exit that follows drains. Only
    the default action gets the drain first: within ``shutdown_timeout``, then the
    process dies of SIGTERM as it would have. ``SIG_IGN`` stays ignored. So that the
    drain stays first whatever is installed after it, ``signal.signal`` and
    ``signal.getsignal`` are wrapped for SIGTERM only: ``getsignal`` reports the handler
    set last, as it would without LayerSync. A handler installed from C, or SIGTERM
    ignored before this call, is left alone (returns False)."""
    if threading.current_thread() is not threading.main_thread():
        logger.warning("drain_on_sigterm() must be called from the main thread: SIGTERM will not drain")
        return False
    return install_sigterm_drain()


def install_sigterm_drain() -> bool:
    """:func:`drain_on_sigterm`, quietly: False outside the main thread."""
    if not _SUPPORTED or threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = _real_getsignal(_SIGTERM)
        if current is _on_sigterm:
            return True
        if current is None or current == signal.SIG_IGN:
            return False  # installed from C, or ignored on purpose: not ours to touch
        _real_signal(_SIGTERM, _on_sigterm)
    except (ValueError, OSError, TypeError):  # not the main interpreter
        return False
    _state.chained = current
    if not _state.installed:
        _state.installed = True
        signal.signal = _signal
        signal.getsignal = _getsignal
    return True


def uninstall_sigterm_drain() -> None:
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
    budget = exit_budget()
    if budget <= 0:
        return
    thread = threading.Thread(target=drain, name="layersync-drain", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        return
    thread.join(budget + 1.0)  # the drain keeps its own deadline; this is the backstop


# -- draining every driver of the process -------------------------------------------------------
def _after_fork_in_child() -> None:
    for worker in list(WORKERS):
        worker._after_fork()
    watch_multiprocessing(forked=True)


def drain_all(timeout: float | None = None, *, at_exit: bool = False) -> int:
    """Shut down every worker of this process within what is left of this exit's budget
    (:func:`exit_deadline`: the longest ``shutdown_timeout``, or ``timeout``);
    with a spool, what is left is kept there. Logs once per exit how many events were not
    delivered; returns that number."""
    workers = _here()
    if not workers:
        return 0
    asked = _asked(workers, timeout)
    deadline, budget = exit_deadline(asked)
    deadline = min(deadline, time.monotonic() + asked)
    left = kept = 0
    # Idle workers first (they take no time), then each an equal share of what is left: a
    # client whose hub hangs cannot starve the others.
    workers.sort(key=lambda w: not w.sender.idle)
    for i, worker in enumerate(workers):
        if at_exit:
            worker._finalizing = True  # no thread may start during interpreter shutdown
        share = max(deadline - time.monotonic(), 0.0) / (len(workers) - i)
        try:
            worker_left, worker_kept = worker._shutdown(share)
        except Exception:
            continue
        left += worker_left
        kept += worker_kept
    if not first_to_say(left):  # a drain before this one in this exit said so
        return left
    # Events lost (or left for the next start) are said even in an app without logging.
    if kept:
        log_always(
            logger,
            logging.WARNING,
            "exiting with %d undelivered event(s) after %.1fs; %d kept in the spool for the next start",
            left,
            budget,
            kept,
        )
    else:
        log_always(logger, logging.WARNING, "exiting with %d undelivered event(s) after %.1fs", left, budget)
    return left


async def adrain_all(timeout: float | None, first: Drained) -> int:
    """:func:`drain_all` from ``first``'s event loop (the ASGI lifespan): ``first`` shuts
    down on the loop, so that an asyncio sender delivers and closes its client there; then
    the others, and whatever ``first`` still holds, from a thread, within the same budget."""
    asked = _asked(_here(), timeout)
    deadline = min(exit_deadline(asked)[0], time.monotonic() + asked)
    try:
        await first.ashutdown(max(deadline - time.monotonic(), 0.0))
    except Exception:
        pass  # drain_all tries again
    return await asyncio.to_thread(drain_all, timeout)


def _here() -> list[Drained]:
    """The workers of this process (a forked child's copies of its parent's are not)."""
    pid = os.getpid()
    return [w for w in list(WORKERS) if w._pid == pid]


def _asked(workers: Sequence[Drained], timeout: float | None) -> float:
    if timeout is not None:
        return max(timeout, 0.0)
    return max((w.settings.shutdown_timeout for w in workers), default=0.0)


def exit_budget() -> float:
    """Seconds the exit drain may take: 0 when no client of this process has anything
    queued or a spool to write (the drain would do nothing)."""
    busy = [w for w in _here() if w._keeper is not None or not w.sender.idle]
    return max((w.settings.shutdown_timeout for w in busy), default=0.0)


def _drain_all_at_exit() -> None:
    try:
        drain_all(at_exit=True)
    except Exception:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_drain_all_at_exit)
