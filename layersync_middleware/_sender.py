"""The background sender: never block the caller, never lose a purchase quietly.

``submit()`` is a few dictionary operations under a lock that is never held during
I/O. Encoding, batching, gzip and HTTP happen in a worker: a daemon thread (the
default), a task on the app's asyncio loop, or inline in the caller (``sync``).

The queue is bounded; when full, the lowest-priority, oldest event goes (wire.md 5).
A failed event is parked with backoff and retried until its event name's maximum age
or attempts run out, without holding up anything else. Every drop is counted by
reason, passed to ``on_drop`` and logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import _wire
from ._event import Event
from ._log import RateLimitedLog, logger
from ._settings import Settings
from ._transport import AsyncTransport, Outcome, Transport, encode_event

DropReason = Literal["queue_full", "expired", "retries_exhausted", "rejected", "invalid", "shutdown"]
OnDrop = Callable[[Event, str], None]

DEDUP_SIZE = 10_000  # recently sent (event_id, event_name) pairs remembered
IMMEDIATE_BACKOFF = 0.5  # first quick retry; doubles up to IMMEDIATE_BACKOFF_CAP
IMMEDIATE_BACKOFF_CAP = 4.0
_BATCH_OVERHEAD = 16  # '{"events":[' + ']}' + commas, near enough


@dataclass(frozen=True)
class Stats:
    """A snapshot of the sender. ``dropped`` counts events by reason."""

    queued: int = 0
    in_flight: int = 0
    sent: int = 0
    retried: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    last_status: int | None = None
    last_error: str | None = None
    hub_latency_ms: float | None = None
    worker_alive: bool = False


class _Item:
    __slots__ = (
        "attempts",
        "body",
        "born",
        "due",
        "event",
        "flush",
        "flush_try",
        "inflight",
        "name",
        "priority",
        "seq",
    )

    def __init__(self, event: Event, seq: int, now: float) -> None:
        self.event = event
        self.name = str(event.get("event_name", ""))
        self.priority = _wire.priority(self.name)
        self.seq = seq
        self.born = now
        self.attempts = 0
        self.due = now
        self.inflight = False
        self.flush = False  # a flush wants one attempt of this event
        self.flush_try = False  # the attempt in flight is that one
        self.body: bytes | None = None


class EventQueue:
    """Events bucketed by priority, oldest first. Not thread-safe: the sender's lock guards it."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._buckets: dict[int, dict[int, _Item]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[_Item]:
        for prio in sorted(self._buckets, reverse=True):
            yield from self._buckets[prio].values()

    def push(self, item: _Item) -> _Item | None:
        """Add ``item``; returns the event evicted to make room (possibly ``item`` itself)."""
        victim = None
        if self._size >= self.cap:
            victim = self._victim(item.priority)
            if victim is None:
                return item
            self.remove(victim)
        self._buckets.setdefault(item.priority, {})[item.seq] = item
        self._size += 1
        return victim

    def _victim(self, new_priority: int) -> _Item | None:
        for prio in sorted(self._buckets):
            if prio > new_priority:
                return None
            for item in self._buckets[prio].values():
                if not item.inflight:
                    return item
        return None

    def remove(self, item: _Item) -> None:
        bucket = self._buckets.get(item.priority)
        if bucket is not None and bucket.pop(item.seq, None) is not None:
            self._size -= 1
            if not bucket:
                del self._buckets[item.priority]

    def due(self, now: float, flush_only: bool) -> Iterator[_Item]:
        for item in self:
            if not item.inflight and (item.flush or (not flush_only and item.due <= now)):
                yield item

    def next_due(self) -> float | None:
        return min((i.due for i in self if not i.inflight), default=None)

    def clear(self) -> list[_Item]:
        items = list(self)
        self._buckets.clear()
        self._size = 0
        return items


_SENDERS: weakref.WeakSet[Sender] = weakref.WeakSet()


class Sender:
    """Queue, retry state and statistics, shared by every way of running the worker."""

    def __init__(
        self,
        settings: Settings,
        transport: Callable[[], Transport],
        *,
        on_drop: OnDrop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._make_transport = transport
        self._on_drop = on_drop
        self._clock = clock
        self._log = RateLimitedLog()
        self._finalizing = False
        self._init_state()
        _SENDERS.add(self)

    def _init_state(self) -> None:
        # Everything a forked child must not share with its parent.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue = EventQueue(self.settings.max_queue_size)
        self._seq = itertools.count()
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._transport: Transport | None = None
        self._hold_until = 0.0
        self._sent = self._retried = self._duplicates = self._batches = 0
        self._dropped: dict[str, int] = {}
        self._last_status: int | None = None
        self._last_error: str | None = None
        self._latency: float | None = None
        self._pending: list[tuple[_Item, DropReason, Outcome | None]] = []

    # -- the caller's side ---------------------------------------------------------------
    def submit(self, event: Event) -> bool:
        """Queue ``event``. Never raises, never blocks on I/O. False: a duplicate, or dropped."""
        return self.claim(event) and self.enqueue_claimed(event)

    def claim(self, event: Event) -> bool:
        """Remember ``(event_id, event_name)``; False if it was already sent or queued.
        The browser SDK re-sends a stale id for up to 30 s: it must be forwarded once."""
        if self._pid != os.getpid():  # forked by a server that skipped the fork hooks
            self._after_fork()
        key = (str(event.get("event_id")), str(event.get("event_name")))
        with self._lock:
            if key in self._recent:
                self._duplicates += 1
                return False
            self._recent[key] = None
            if len(self._recent) > DEDUP_SIZE:
                self._recent.popitem(last=False)
            return True

    def enqueue_claimed(self, event: Event) -> bool:
        with self._cond:
            item = _Item(event, next(self._seq), self._clock())
            evicted = self._queue.push(item)
            self._cond.notify()
        if evicted is not None:
            self._drop(evicted, "queue_full")
        if evicted is item:
            return False
        self._wake()
        return True

    def count_refused(self, reason: str) -> None:
        """Count an event refused before it reached the queue (bad input, a forged header)."""
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def _wake(self) -> None:
        """Make sure something will deliver the queue (start a worker, or send inline)."""

    # -- batches and outcomes (shared by every worker) -----------------------------------------
    def _take(self, now: float, flush_only: bool = False) -> list[_Item]:
        """Mark and return the next batch; must hold the lock. Drops events that cannot be encoded."""
        batch: list[_Item] = []
        size = _BATCH_OVERHEAD
        bad: list[_Item] = []
        for item in self._queue.due(now, flush_only):
            if item.body is None:
                try:
                    item.body = encode_event(item.event)
                except Exception:  # not JSON-able (an object, NaN, a cycle): it can never be sent
                    bad.append(item)
                    continue
                if len(item.body) + _BATCH_OVERHEAD > _wire.BATCH_MAX_BYTES:
                    bad.append(item)
                    continue
            if batch and size + len(item.body) + 1 > _wire.BATCH_MAX_BYTES:
                break
            item.inflight = True
            item.flush_try = item.flush
            batch.append(item)
            size += len(item.body) + 1
            if len(batch) >= _wire.BATCH_MAX_EVENTS:
                break
        for item in bad:
            self._queue.remove(item)
            self._drop_later(item, "invalid")
        return batch

    def _apply(self, batch: Sequence[_Item], outcomes: Sequence[Outcome], started: float) -> None:
        """Record a batch's outcomes; must hold the lock."""
        now = self._clock()
        self._batches += 1
        self._latency = (now - started) * 1000
        if len(outcomes) != len(batch):  # a broken custom transport: try again later
            outcomes = [Outcome("retry", None, None, "transport returned the wrong number of outcomes")] * len(batch)
        for item, outcome in zip(batch, outcomes):
            item.inflight = False
            if item.flush_try:  # a flush asked while this attempt was in flight gets its own
                item.flush = item.flush_try = False
            self._last_status = outcome.status
            if outcome.action == "ok":
                self._queue.remove(item)
                self._sent += 1
            elif outcome.action == "drop":
                self._last_error = outcome.error
                self._queue.remove(item)
                self._drop_later(item, "rejected", outcome)
            else:
                self._last_error = outcome.error
                self._reschedule(item, outcome, now)
        if any(o.action == "retry" and o.retry_after for o in outcomes):
            pause = max(o.retry_after or 0.0 for o in outcomes)
            self._hold_until = max(self._hold_until, now + pause)

    def _reschedule(self, item: _Item, outcome: Outcome, now: float) -> None:
        item.attempts += 1
        meta = item.event.get("client_meta")
        if isinstance(meta, dict):  # the hub sees how many tries an event took
            meta["attempts"] = item.attempts
            item.body = None  # re-encode with the new count
        max_age, max_attempts = _wire.retry_policy(item.name)
        if item.attempts >= max_attempts:
            self._queue.remove(item)
            self._drop_later(item, "retries_exhausted", outcome)
            return
        if item.attempts <= self.settings.max_retries:
            delay = min(IMMEDIATE_BACKOFF * 2 ** (item.attempts - 1), IMMEDIATE_BACKOFF_CAP)
        else:
            ladder = _wire.BACKOFF_LADDER
            delay = ladder[min(item.attempts - self.settings.max_retries - 1, len(ladder) - 1)]
        delay *= 1 + random.uniform(-_wire.BACKOFF_JITTER, _wire.BACKOFF_JITTER)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        if now + delay - item.born > max_age:
            self._queue.remove(item)
            self._drop_later(item, "expired", outcome)
            return
        self._retried += 1
        item.due = now + delay

    # Drops found under the lock are reported after it is released: on_drop is user code.
    def _drop_later(self, item: _Item, reason: DropReason, outcome: Outcome | None = None) -> None:
        self._pending.append((item, reason, outcome))

    def _report_drops(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for item, reason, outcome in pending:
            self._drop(item, reason, outcome)

    def _drop(self, item: _Item, reason: DropReason, outcome: Outcome | None = None) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
        detail = f" ({outcome.error})" if outcome and outcome.error else ""
        level = logging.ERROR if item.name == "purchase" or reason == "rejected" else logging.WARNING
        self._log.warn(
            f"drop:{reason}",
            "dropped a %s event (%s) after %d attempts: %s%s",
            item.name,
            item.event.get("event_id"),
            item.attempts,
            reason,
            detail,
            level=level,
        )
        if outcome is not None and outcome.status in (401, 403):
            self._log.warn(
                "auth",
                "the hub refused the secret key (HTTP %s); check LAYERSYNC_SECRET",
                outcome.status,
                level=logging.ERROR,
            )
        if self._on_drop is not None:
            try:
                self._on_drop(item.event, reason)
            except Exception:  # user code must not kill the worker
                self._log.warn("on_drop", "on_drop raised", level=logging.ERROR)

    # -- sending in the calling thread --------------------------------------------------
    def _transport_now(self) -> Transport:
        transport = self._transport
        if transport is None:
            transport = self._transport = self._make_transport()
        return transport

    def _send_batch(self, batch: list[_Item], timeout: float) -> None:
        started = self._clock()
        try:
            outcomes = self._transport_now().send([i.event for i in batch], [i.body or b"" for i in batch], timeout)
        except Exception as exc:  # a transport must not raise; if one does, the events wait
            outcomes = [Outcome("retry", None, None, type(exc).__name__)] * len(batch)
        with self._cond:
            self._apply(batch, outcomes, started)
            self._cond.notify_all()
        self._report_drops()

    def _drain_inline(self, deadline: float, flush_only: bool) -> None:
        """Deliver from the calling thread until nothing is due or the deadline passes."""
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            with self._lock:
                now = self._clock()
                if not flush_only and now < self._hold_until:
                    return
                batch = self._take(now, flush_only)
            self._report_drops()
            if not batch:
                return
            self._send_batch(batch, remaining)

    def deliver_now(self, event: Event, timeout: float) -> Outcome:
        """Send one event in the caller's thread, with the quick retries, within ``timeout``."""
        if self._pid != os.getpid():
            self._after_fork()
        deadline = self._clock() + timeout
        try:
            body = encode_event(event)
        except (TypeError, ValueError) as exc:
            return Outcome("drop", None, None, f"cannot encode: {exc}")
        outcome = Outcome("retry", None, None, "timed out")
        for attempt in range(self.settings.max_retries + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            started = self._clock()
            try:
                outcome = self._transport_now().send([event], [body], remaining)[0]
            except Exception as exc:
                outcome = Outcome("retry", None, None, type(exc).__name__)
            with self._lock:
                self._latency = (self._clock() - started) * 1000
                self._last_status = outcome.status
                if outcome.action == "ok":
                    self._sent += 1
                else:
                    self._last_error = outcome.error
            if outcome.action != "retry":
                break
            pause = max(IMMEDIATE_BACKOFF * 2**attempt, outcome.retry_after or 0.0)
            if self._clock() + pause >= deadline:
                break
            time.sleep(pause)
        return outcome

    # -- flush, shutdown, stats -------------------------------------------------------------
    def _begin_flush(self, timeout: float | None) -> float | None:
        """Make every queued event due now for one attempt; the deadline, or None if empty."""
        timeout = self.settings.timeout_ms / 1000 if timeout is None else max(timeout, 0.0)
        deadline = self._clock() + timeout
        with self._lock:
            for item in self._queue:
                item.flush = True
            return deadline if len(self._queue) else None

    def _end_flush(self) -> int:
        """Forget the flush; how many events are still queued."""
        with self._lock:
            for item in self._queue:
                item.flush = False
            return len(self._queue)

    def _flush_pending(self) -> bool:
        return any(item.flush for item in self._queue)

    def flush(self, timeout: float | None = None) -> int:
        """Try every queued event once, waiting at most ``timeout`` seconds (default:
        ``timeout_ms``). Returns how many events are still queued."""
        if self._pid != os.getpid():
            self._after_fork()
        deadline = self._begin_flush(timeout)
        if deadline is None:
            return 0
        self._flush_until(deadline)
        return self._end_flush()

    def _flush_until(self, deadline: float) -> None:
        self._drain_inline(deadline, flush_only=True)

    def shutdown(self, timeout: float | None = None) -> int:
        """Flush within ``timeout``, then stop the worker and close connections.
        Returns how many events could not be delivered. The sender restarts on next use."""
        timeout = self.settings.shutdown_timeout if timeout is None else max(timeout, 0.0)
        deadline = self._clock() + timeout
        left = self.flush(timeout)
        stopped = self._stop(max(deadline - self._clock(), 0.0))
        if stopped:  # a worker still in a request keeps its connection; it is a daemon
            transport, self._transport = self._transport, None
            if transport is not None:
                try:
                    transport.close()
                except Exception:
                    pass
        return left

    def _stop(self, timeout: float) -> bool:
        """Stop the worker, waiting at most ``timeout``; True when no worker runs any more."""
        return True

    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                queued=len(self._queue),
                in_flight=sum(1 for i in self._queue if i.inflight),
                sent=self._sent,
                retried=self._retried,
                duplicates=self._duplicates,
                dropped=dict(self._dropped),
                batches=self._batches,
                last_status=self._last_status,
                last_error=self._last_error,
                hub_latency_ms=self._latency,
                worker_alive=self._worker_alive(),
            )

    def _worker_alive(self) -> bool:
        return False

    # -- process lifecycle ------------------------------------------------------------------
    def _after_fork(self) -> None:
        # In the child: fresh lock, queue and connections. The parent's queued events stay
        # the parent's to send. No logging here: a logging lock held by another thread
        # at fork time would deadlock the child.
        self._init_state()

    def _atexit(self) -> None:
        if self._pid != os.getpid():
            return
        self._finalizing = True
        with self._lock:
            queued = len(self._queue)
        if not queued:
            self._stop(0.1)
            return
        left = self.shutdown(self.settings.shutdown_timeout)
        if left:
            logger.warning("exiting with %d undelivered event(s) after %.1fs", left, self.settings.shutdown_timeout)


class SyncSender(Sender):
    """Delivers inline in the caller, with the quick retries; for tests, scripts and serverless.
    Events still failing stay queued and go with the next event or ``flush()``."""

    def _wake(self) -> None:
        timeout = self.settings.timeout_ms / 1000
        self._drain_inline(self._clock() + timeout * (self.settings.max_retries + 1), flush_only=False)


class ThreadSender(Sender):
    """A daemon thread, started on first use and again in a forked child."""

    def _init_state(self) -> None:
        super()._init_state()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def _worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake(self) -> None:
        if self._worker_alive() or self._finalizing or sys.is_finalizing():
            return
        _warn_if_uwsgi_without_threads()
        with self._lock:
            if self._worker_alive():
                return
            self._stopping = False
            thread = threading.Thread(target=self._run, name="layersync-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return
            self._thread = thread

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    batch = self._next_batch()
                    if batch is None:
                        return
                self._report_drops()
                if batch:
                    self._send_batch(batch, self.settings.timeout_ms / 1000)
            except Exception:  # never let the worker die on a bug; say so and go on
                logger.exception("layersync sender error")
                time.sleep(1.0)

    def _next_batch(self) -> list[_Item] | None:
        """Wait (holding the condition) for a due batch; None when told to stop."""
        while True:
            flushing = self._flush_pending()
            if self._stopping and not flushing:
                return None
            now = self._clock()
            batch = self._take(now) if flushing or now >= self._hold_until else []
            if batch or self._pending:  # something to send, or drops to report outside the lock
                return batch
            next_due = self._queue.next_due()
            wait = None if next_due is None else max(next_due, self._hold_until) - now
            self._cond.wait(None if wait is None else max(wait, 0.001))

    def _flush_until(self, deadline: float) -> None:
        self._wake()
        if not self._worker_alive():
            self._drain_inline(deadline, flush_only=True)
            return
        with self._cond:
            self._cond.notify_all()
            while self._flush_pending():
                remaining = deadline - self._clock()
                if remaining <= 0 or not self._worker_alive():
                    break
                self._cond.wait(min(remaining, 0.1))

    def _stop(self, timeout: float) -> bool:
        thread = self._thread
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        return thread is None or not thread.is_alive()


class AsyncioSender(Sender):
    """A task on the app's event loop using an async transport. Submit from the loop (or
    any thread); the task starts on first use inside a running loop. Drain it with
    ``await aflush()``/``await ashutdown()`` on lifespan shutdown; events left when the
    loop is gone go with the synchronous ``flush()`` or the exit drain."""

    def __init__(
        self,
        settings: Settings,
        transport: Callable[[], Transport],
        async_transport: Callable[[], AsyncTransport],
        *,
        on_drop: OnDrop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_async_transport = async_transport
        super().__init__(settings, transport, on_drop=on_drop, clock=clock)

    def _init_state(self) -> None:
        super()._init_state()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._atransport: AsyncTransport | None = None
        self._stopping = False

    def _worker_alive(self) -> bool:
        return (
            self._task is not None and not self._task.done() and self._loop is not None and not self._loop.is_closed()
        )

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._worker_alive():
            loop, wakeup = self._loop, self._wakeup
            assert loop is not None and wakeup is not None
            if running is loop:
                wakeup.set()
            else:
                loop.call_soon_threadsafe(wakeup.set)
            return
        if self._finalizing:
            return
        if running is not None:
            self._start(running)
        elif self._loop is not None and self._loop.is_running():
            # From a worker thread (a sync endpoint): start the task on the app's loop.
            loop = self._loop
            loop.call_soon_threadsafe(self._start_if_needed, loop)

    def _start_if_needed(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._worker_alive():
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
        wakeup, progress = self._wakeup, self._progress
        while True:
            try:
                with self._lock:
                    flushing = self._flush_pending()
                    if self._stopping and not flushing:
                        return
                    now = self._clock()
                    batch = self._take(now) if flushing or now >= self._hold_until else []
                    next_due = self._queue.next_due()
                self._report_drops()
                if batch:
                    await self._asend_batch(batch)
                    progress.set()
                    continue
                wait = None if next_due is None else max(max(next_due, self._hold_until) - now, 0.001)
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("layersync sender error")
                await asyncio.sleep(1.0)

    async def _asend_batch(self, batch: list[_Item]) -> None:
        if self._atransport is None:
            self._atransport = self._make_async_transport()
        started = self._clock()
        try:
            outcomes = await self._atransport.asend(
                [i.event for i in batch], [i.body or b"" for i in batch], self.settings.timeout_ms / 1000
            )
        except Exception as exc:
            outcomes = [Outcome("retry", None, None, type(exc).__name__)] * len(batch)
        with self._cond:
            self._apply(batch, outcomes, started)
            self._cond.notify_all()
        self._report_drops()

    async def aflush(self, timeout: float | None = None) -> int:
        """Like :meth:`flush`, awaiting the loop's worker instead of blocking the loop."""
        deadline = self._begin_flush(timeout)
        if deadline is None:
            return 0
        self._wake()
        loop = asyncio.get_running_loop()
        if self._worker_alive() and self._loop is loop and self._progress is not None:
            progress = self._progress
            while True:
                with self._lock:
                    if not self._flush_pending():
                        break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                progress.clear()
                try:
                    await asyncio.wait_for(progress.wait(), min(remaining, 0.1))
                except asyncio.TimeoutError:
                    pass
        else:
            await asyncio.to_thread(self._drain_inline, deadline, True)
        return self._end_flush()

    async def ashutdown(self, timeout: float | None = None) -> int:
        left = await self.aflush(self.settings.shutdown_timeout if timeout is None else timeout)
        task = self._task
        with self._lock:
            self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._task = None
        if self._atransport is not None:
            try:
                await self._atransport.aclose()
            except Exception:
                pass
            self._atransport = None
        return left

    def _flush_until(self, deadline: float) -> None:
        # Blocking flush from sync code (or at exit): the loop may be gone or be this
        # very thread, so deliver inline with the synchronous transport.
        self._drain_inline(deadline, flush_only=True)

    def _stop(self, timeout: float) -> bool:
        self._stopping = True
        if self._worker_alive() and self._loop is not None and self._wakeup is not None:
            try:
                self._loop.call_soon_threadsafe(self._wakeup.set)
            except RuntimeError:
                pass
        return not self._worker_alive()


_uwsgi_checked = False


def _warn_if_uwsgi_without_threads() -> None:
    """uWSGI without --enable-threads never runs our worker thread: say so, once."""
    global _uwsgi_checked
    if _uwsgi_checked:
        return
    _uwsgi_checked = True
    uwsgi = sys.modules.get("uwsgi")
    opt = getattr(uwsgi, "opt", None)
    if isinstance(opt, dict) and not (opt.get("enable-threads") or opt.get("threads")):
        logger.warning(
            "uWSGI runs without --enable-threads: LayerSync's sender thread cannot run. "
            "Start uWSGI with --enable-threads (and --py-call-uwsgi-fork-hooks), or use sender='sync'."
        )


def _after_fork_in_child() -> None:
    for sender in list(_SENDERS):
        sender._after_fork()


def _drain_all_at_exit() -> None:
    for sender in list(_SENDERS):
        try:
            sender._atexit()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_drain_all_at_exit)
