"""The drivers of the sender: they wait and do I/O; :mod:`._sender` decides.

* :class:`InlineWorker` (``sender="sync"``): delivers in the caller, for tests, scripts
  and serverless. Events still failing stay queued and go with the next event or
  ``flush()``.
* :class:`ThreadWorker` (the default): a daemon thread, started lazily on first use
  and again in a forked child (the pid is checked too, for servers that fork without
  Python's hooks, such as uWSGI).
* :class:`AsyncioWorker`: a task on the app's event loop, over an async transport.

Every bounded call (``flush``, ``shutdown``, ``send``, the exit drain) has one total
deadline: the transports bound a whole request, not each read.

With ``spool_path``, each worker has a :class:`~._spool.SpoolKeeper` next to it: it
adopts what processes gone for good left in the spool when the worker is made, writes
the sender's journal while the worker runs, and on shutdown writes what is left and
lets go of it. How the process ends (SIGTERM, Celery, multiprocessing) is
:mod:`.lifecycle`'s business; they all end in its :func:`~.lifecycle.drain_all`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._build import Paired, in_on_drop
from .._event import Event, encode_event
from .._log import RateLimitedLog, logger
from . import lifecycle as _lifecycle
from .core import REFUSED, WAKE, Sender, SpoolingSender, Stats
from .queue import Queued
from .spool import SpoolKeeper
from .transport import AsyncTransport, Outcome, Transport


def _failed(batch: Sequence[object], exc: BaseException) -> list[Outcome]:
    return [Outcome("retry", None, None, type(exc).__name__)] * len(batch)


class Worker:
    """What every driver shares: submitting, the synchronous transport, inline
    delivery (flush without a worker, ``send()``), closing what it opened."""

    def __init__(self, sender: Sender, transport: Callable[[], Transport]) -> None:
        self.sender = sender
        self.settings = sender.settings
        self._make_transport = transport
        self._clock = sender._clock
        self._log = RateLimitedLog(sender.log)
        self._finalizing = False
        self._keeper: SpoolKeeper | None = None
        if isinstance(sender, SpoolingSender) and self.settings.spool_path is not None:
            self._keeper = SpoolKeeper(sender, self.settings.spool_path, self.wake)
        self._reset()
        _lifecycle.WORKERS.add(self)
        _lifecycle.watch_multiprocessing()
        if self._keeper is not None:
            self._keeper.start()  # send what processes gone for good left in the spool

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._transport: Transport | None = None
        self._transport_lock = threading.Lock()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # forked by a server that skipped the fork hooks
            self._after_fork()

    def _after_fork(self) -> None:
        # In the child: a fresh queue, lock and connections (the parent's sockets are the
        # parent's). No logging here: a logging lock held at fork time would deadlock.
        self.sender.reset()
        self._reset()
        if self._keeper is not None:
            self._keeper.after_fork()

    # -- the caller's side -----------------------------------------------------------------
    def submit(self, event: Event, *, verified: bool = True) -> bool:
        """Queue ``event``; never blocks on I/O. False: a duplicate, or no room."""
        self._check_fork()
        done = self.sender.submit(event, verified=verified)
        if done == WAKE:
            self.wake()
        return done != REFUSED

    def submit_paired(self, record: Paired) -> bool:
        """:meth:`offer`, but the duplicate check happens now: False for a pair already sent."""
        self._check_fork()
        done = self.sender.submit_paired(record)
        if done == WAKE:
            self.wake()
        return done != REFUSED

    def offer(self, record: Paired | Event) -> None:
        """Hand over a paired request's record (the sender builds its event), or an event
        with an id made just now. No lock on the way (see :meth:`Sender.offer`)."""
        self._check_fork()
        if in_on_drop():  # taken in now, marked: on_drop is not told of its drop (no loop)
            if isinstance(record, dict):
                self.submit(record)
            else:
                self.submit_paired(record)
            return
        if self.sender.offer(record) == WAKE:
            self.wake()

    def enqueue_claimed(self, event: Event, *, failed: tuple[int, Outcome] | None = None) -> bool:
        done = self.sender.enqueue_claimed(event, failed=failed)
        if done == WAKE:
            self.wake()
        return done != REFUSED

    def wake(self) -> None:
        """There is work: make sure something will deliver it."""

    def _keep(self) -> None:
        """With a spool, make sure its writer runs (called on wake-ups, not per event)."""
        keeper = self._keeper
        if keeper is not None and not self._finalizing and not keeper.running():
            keeper.ensure_running()

    @property
    def alive(self) -> bool:
        return False

    def stats(self) -> Stats:
        stats = self.sender.stats(worker_alive=self.alive)
        if self.settings.dedup_url:
            from .dedup import fallbacks  # imports no redis: cheap

            stats = dataclasses.replace(stats, dedup_fallbacks=fallbacks())
        return stats

    # -- synchronous delivery ----------------------------------------------------------------
    def _transport_now(self) -> Transport:
        transport = self._transport
        if transport is None:
            with self._transport_lock:  # send() and the worker may both want the first one
                transport = self._transport
                if transport is None:
                    transport = self._transport = self._make_transport()
        return transport

    def _send(self, batch: list[Queued], timeout: float) -> None:
        batch = self.sender.prepare(batch)
        if batch:
            started = self._clock()
            try:
                outcomes = self._transport_now().send([i.event for i in batch], [i.body or b"" for i in batch], timeout)
            except Exception as exc:  # a transport must not raise; if one does, the events wait
                outcomes = _failed(batch, exc)
            self.sender.record(batch, outcomes, self._clock() - started)
        self.sender.report_drops()

    def _drain_inline(self, deadline: float) -> None:
        """Deliver from the calling thread until nothing is due or the deadline passes."""
        sender = self.sender
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            step = sender.take(linger=0.0)
            if not isinstance(step, list):
                sender.report_drops()
                return
            if step:
                self._send(step, remaining)
            else:
                sender.report_drops()

    def deliver_now(self, event: Event, timeout: float) -> tuple[Outcome, int]:
        """Send one event in the caller's thread with the quick retries, all within
        ``timeout`` seconds; no pause after the last attempt."""
        self._check_fork()
        deadline = self._clock() + timeout
        try:
            body = encode_event(event)
        except (TypeError, ValueError) as exc:
            return Outcome("drop", None, None, f"cannot encode: {exc}"), 0
        outcome = Outcome("retry", None, None, "timed out")
        attempts = self.settings.max_retries + 1
        made = 0
        for attempt in range(1, attempts + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            started = self._clock()
            try:
                outcome = self._transport_now().send([event], [body], remaining)[0]
            except Exception as exc:
                outcome = _failed([event], exc)[0]
            made = attempt
            self.sender.note_attempt(outcome, self._clock() - started)
            if outcome.action != "retry" or attempt == attempts:
                break
            pause = self.sender.quick_retry_delay(attempt, outcome)
            if self._clock() + pause >= deadline:
                break
            time.sleep(pause)
        return outcome, made

    # -- flush and shutdown --------------------------------------------------------------------
    def _deadline(self, timeout: float | None, default: float) -> float:
        return self._clock() + (default if timeout is None else max(timeout, 0.0))

    def flush(self, timeout: float | None = None) -> int:
        """Try every queued event once within ``timeout`` seconds (default: the request
        timeout). Returns how many events are still queued."""
        self._check_fork()
        deadline = self._deadline(timeout, self.settings.timeout)
        if not self.sender.begin_flush():
            return 0
        self._flush_until(deadline)
        left = self.sender.end_flush()
        if self._keeper is not None:
            self._keeper.persist()  # what is left is on disk when flush() returns
        return left

    def _flush_until(self, deadline: float) -> None:
        self._drain_inline(deadline)

    async def aflush(self, timeout: float | None = None) -> int:
        """:meth:`flush` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def shutdown(self, timeout: float | None = None) -> int:
        """Flush within ``timeout`` (default ``shutdown_timeout``), stop the worker and close
        every connection it opened. Returns how many events are left (with a spool: kept
        there, for another process or the next start). Restarts on next use."""
        return self._shutdown(timeout)[0]

    def _shutdown(self, timeout: float | None) -> tuple[int, int]:
        """:meth:`shutdown`; returns (events left, of which the spool keeps)."""
        deadline = self._deadline(timeout, self.settings.shutdown_timeout)
        keeper = self._keeper
        # Writing the spool takes milliseconds; keep them out of the hub's share.
        reserve = min(0.2, max(deadline - self._clock(), 0.0) / 4) if keeper is not None else 0.0
        left = self.flush(max(deadline - self._clock() - reserve, 0.0))
        if self._stop(max(deadline - self._clock() - reserve, 0.0)):
            self._close()
        kept = keeper.close(max(deadline - self._clock(), 0.05)) if keeper is not None else 0
        return left, kept

    async def ashutdown(self, timeout: float | None = None) -> int:
        """:meth:`shutdown` without blocking the event loop."""
        return await asyncio.to_thread(self.shutdown, timeout)

    def _stop(self, timeout: float) -> bool:
        """Stop the worker within ``timeout``; True when none runs any more."""
        return True

    def _close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception:
                pass

    def _drop_transports(self) -> None:
        """Close and forget the transports: the next send makes new ones."""
        self._close()


class InlineWorker(Worker):
    """``sender="sync"``: each event is sent in the caller, at once.

    An event tracked from inside a hook (``before_send``, ``on_drop``) while this thread
    delivers (a flush included) is sent by the delivery under way, not by a second one
    inside it: no lock is taken twice and no hook runs inside itself. One tracked from a
    hook with no delivery under way (the ``before_send`` of ``track()`` or ``send()``)
    goes at once, like any other: it must not wait for the next event when the hook
    drops its own."""

    def _reset(self) -> None:
        super()._reset()
        self._delivering = threading.local()

    def wake(self) -> None:
        self._keep()
        self._flush_until(self._clock() + self.settings.timeout)

    def _flush_until(self, deadline: float) -> None:
        delivering = self._delivering
        if getattr(delivering, "on", False):
            return
        delivering.on = True
        try:
            self._drain_inline(deadline)
        finally:
            delivering.on = False


class ThreadWorker(Worker):
    """A daemon thread that sends batches and sleeps until something is due."""

    def _reset(self) -> None:
        super()._reset()
        self._close_when_done = False
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wake(self) -> None:
        self._keep()
        if self.alive:
            self.sender.wake()
            return
        if self._finalizing or sys.is_finalizing():
            return
        _warn_if_uwsgi_without_threads()
        with self.sender.lock:
            if self._thread is not None and self._thread.is_alive():  # another caller won
                return
            self._stopping = False
            # Ours before it runs: its first look checks that it is still the worker's thread.
            thread = self._thread = threading.Thread(target=self._run, name="layersync-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                self._thread = None

    def _run(self) -> None:
        sender, me = self.sender, threading.current_thread()
        while True:
            try:
                while True:
                    # Stopped, or replaced after a fork that skipped Python's hooks.
                    if self._stopping or self._thread is not me:
                        if self._close_when_done:  # shutdown() could not wait for us
                            self._close_when_done = False
                            self._close()
                        sender.sleeping = True  # no driver runs now: the next event must start one
                        return
                    step = sender.take()
                    if isinstance(step, list):
                        break
                    sender.wait(None if step is None else max(step, 0.001))
                if step:
                    self._send(step, self.settings.timeout)
                else:
                    sender.report_drops()
            except Exception:  # never let the worker die on a bug; say so and go on
                self.sender.log.exception("layersync sender error")
                time.sleep(1.0)

    def _flush_until(self, deadline: float) -> None:
        self.wake()
        self.sender.wait_flush(deadline, lambda: self.alive)
        if self._clock() < deadline and not self.alive:  # no thread to be had (interpreter exit, uWSGI without threads)
            self._drain_inline(deadline)

    def _stop(self, timeout: float) -> bool:
        thread = self._thread
        self._stopping = True
        self.sender.nudge()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            self._close_when_done = True  # still in a request: it closes its connection after
            return False
        self._thread = None
        return True


class AsyncioWorker(Worker):
    """A task on the app's event loop, using an async transport.

    It starts on first use inside a running loop. Events submitted from a thread with
    no loop (a sync endpoint before any async code ran) are delivered by a fallback
    thread, so they never wait for shutdown. Drain it with ``await aflush()`` or
    ``await ashutdown()``; what is left when the loop is gone goes with the
    synchronous ``flush()`` or the exit drain.
    """

    def __init__(
        self,
        sender: Sender,
        transport: Callable[[], Transport],
        async_transport: Callable[[], AsyncTransport],
    ) -> None:
        self._make_async_transport = async_transport
        super().__init__(sender, transport)

    def _reset(self) -> None:
        super()._reset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._atransport: AsyncTransport | None = None
        self._fallback: ThreadWorker | None = None
        self._stopping = False

    @property
    def alive(self) -> bool:
        loop, task = self._loop, self._task
        return task is not None and not task.done() and loop is not None and not loop.is_closed()

    def wake(self) -> None:
        self._keep()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if self.alive and loop is not None and self._wakeup is not None:
            self.sender.sleeping = False  # woken: the next events need not wake it again
            if running is loop:
                self._wakeup.set()
            else:
                loop.call_soon_threadsafe(self._wakeup.set)
            return
        if self._finalizing:
            return
        if running is not None:
            self._start(running)
        elif loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._start_if_needed, loop)
        else:
            self._thread_fallback().wake()

    def _thread_fallback(self) -> ThreadWorker:
        fallback = self._fallback
        if fallback is None:
            self.sender.log.info("sender='asyncio' has no event loop yet: delivering from a thread until one runs")
            fallback = self._fallback = ThreadWorker(self.sender, self._make_transport)
            _lifecycle.WORKERS.discard(fallback)  # this worker drains and stops it
        return fallback

    def _start_if_needed(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.alive:
            self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._atransport = None  # an async client belongs to the loop that made it
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._stopping = False
        self._task = loop.create_task(self._run(), name="layersync-sender")

    async def _run(self) -> None:
        assert self._wakeup is not None and self._progress is not None
        sender, wakeup, progress = self.sender, self._wakeup, self._progress
        try:
            await self._loop_until_stopped(sender, wakeup, progress)
        finally:
            sender.sleeping = True  # no driver runs now: the next event must start one

    async def _loop_until_stopped(self, sender: Sender, wakeup: asyncio.Event, progress: asyncio.Event) -> None:
        while not self._stopping:
            try:
                wakeup.clear()  # before looking, so that a wake-up while we send is kept
                step = sender.take()
                if isinstance(step, list):
                    if step:
                        await self._asend(step)
                    await self._report_drops()
                    progress.set()
                    continue
                try:
                    await asyncio.wait_for(wakeup.wait(), step)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                await self._close_async_transport()  # the loop is ending: its client goes with it
                raise
            except Exception:
                self.sender.log.exception("layersync sender error")
                await asyncio.sleep(1.0)

    async def _close_async_transport(self) -> None:
        atransport, self._atransport = self._atransport, None
        if atransport is not None:
            try:
                await atransport.aclose()
            except (Exception, asyncio.CancelledError):  # a broken transport, or cancelled again
                pass

    async def _report_drops(self) -> None:
        """Log the drops and tell ``on_drop``: user code, so from a thread, never on the loop."""
        sender = self.sender
        reports = sender.take_reports()
        if sender.tells_on_drop(reports):
            await asyncio.to_thread(sender.tell, reports)
        else:
            sender.tell(reports)  # log lines only

    async def _asend(self, batch: list[Queued]) -> None:
        sender = self.sender
        if sender.build is not None and any(item.record is not None for item in batch):
            # Building runs before_send, user code that may take its time: never on the loop.
            batch = await asyncio.to_thread(sender.prepare, batch)
        else:
            batch = sender.prepare(batch)  # encoding only: microseconds per event
        if not batch:
            return
        if self._atransport is None:
            self._atransport = self._make_async_transport()
        timeout = self.settings.timeout
        started = self._clock()
        try:
            sending = self._atransport.asend([i.event for i in batch], [i.body or b"" for i in batch], timeout)
            outcomes = await asyncio.wait_for(sending, timeout)  # one deadline for the whole request
        except asyncio.CancelledError:
            sender.abandon(batch)  # the loop is closing: the events were not sent, they go back
            raise
        except Exception as exc:
            outcomes = _failed(batch, exc)
        sender.record(batch, outcomes, self._clock() - started)

    async def aflush(self, timeout: float | None = None) -> int:
        """Like :meth:`flush`, awaiting the loop's worker instead of blocking the loop."""
        self._check_fork()
        deadline = self._deadline(timeout, self.settings.timeout)
        sender = self.sender
        if not sender.begin_flush():
            return 0
        self.wake()
        if self.alive and self._loop is asyncio.get_running_loop() and self._progress is not None:
            progress = self._progress
            while not sender.flush_done():
                remaining = deadline - self._clock()
                if remaining <= 0 or not self.alive:
                    break
                progress.clear()
                try:
                    await asyncio.wait_for(progress.wait(), min(remaining, 0.1))
                except asyncio.TimeoutError:
                    pass
        else:
            await asyncio.to_thread(self._drain_inline, deadline)
        left = sender.end_flush()
        if self._keeper is not None:  # what is left is on disk when aflush() returns, as with flush()
            await asyncio.to_thread(self._keeper.persist)
        return left

    async def ashutdown(self, timeout: float | None = None) -> int:
        deadline = self._deadline(timeout, self.settings.shutdown_timeout)
        left = await self.aflush(max(deadline - self._clock(), 0.0))
        task = self._task
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, max(min(deadline - self._clock(), 1.0), 0.05))
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._task = None
        await self._close_async_transport()
        await asyncio.to_thread(self._stop_fallback, max(deadline - self._clock(), 0.0))
        self._close()
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.close, max(deadline - self._clock(), 0.05))
        return left

    def _drop_transports(self) -> None:
        super()._drop_transports()
        self._atransport = None  # bound to its loop: closed there by ashutdown, or left to it

    def _flush_until(self, deadline: float) -> None:
        # Blocking flush from sync code (or at exit): the loop may be gone or be this
        # very thread, so deliver inline with the synchronous transport.
        self._drain_inline(deadline)

    def _stop_fallback(self, timeout: float) -> bool:
        fallback = self._fallback
        if fallback is None:
            return True
        stopped = fallback._stop(timeout)
        if stopped:
            fallback._close()
        return stopped

    def _stop(self, timeout: float) -> bool:
        self._stopping = True
        loop, wakeup = self._loop, self._wakeup
        if self.alive and loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:
                pass
        return self._stop_fallback(timeout) and not self.alive


_uwsgi_checked = False


def _warn_if_uwsgi_without_threads() -> None:
    """uWSGI without --enable-threads never runs our worker thread: say so, once."""
    global _uwsgi_checked
    if _uwsgi_checked:
        return
    _uwsgi_checked = True
    uwsgi = sys.modules.get("uwsgi")
    opt: Any = getattr(uwsgi, "opt", None)
    if isinstance(opt, dict) and not (opt.get("enable-threads") or opt.get("threads")):
        logger.warning(
            "uWSGI runs without --enable-threads: LayerSync's sender thread cannot run. "
            "Start uWSGI with --enable-threads (and --py-call-uwsgi-fork-hooks), or use sender='sync'."
        )
