"""The sender's decisions, with no I/O: what is due, what a response means, when to
retry, what to drop.

:class:`Sender` is shared by every way of delivering (:mod:`._worker`): inline in the
caller, a daemon thread, a task on the app's event loop. Those drivers only wait and
do I/O; every rule lives here once and is tested with a fake clock and no threads.

``submit()`` is a few dictionary operations under a lock that is never held during
I/O or user code. The queue is bounded; when full, the lowest-priority, oldest event
goes. A failed event is parked with backoff and retried until its event name's
maximum age, without holding up anything else. Every drop is counted by reason and
passed to ``on_drop`` from the driver, never from the request.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from .. import _wire
from .._build import hooks, in_on_drop
from .._event import Event, HeaderEvent, encode_event
from .._log import RateLimitedLog, logger
from .._settings import Settings
from .queue import GONE, IN_FLIGHT, PARKED, READY, EventQueue, Queued
from .transport import Outcome

if TYPE_CHECKING:
    from .._build import Paired


class Observer(Protocol):
    """What the sender tells a metrics observer (see :mod:`.metrics`, which makes one when
    the ``metrics`` setting asks: :func:`~layersync_middleware._delivery.make_worker`)."""

    def sync(self) -> None: ...

    def batch(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], latency: float | None) -> None: ...

    def attempt(self, outcome: Outcome, latency: float) -> None: ...


#: Why an event did not reach the hub. ``stats().dropped`` counts each.
DropReason = Literal[
    "queue_full",  # evicted by a higher-priority event, or refused, while the queue was full
    "expired",  # its event name's maximum age passed before the hub took it
    "retries_exhausted",  # its event name's maximum attempts were used up
    "rejected",  # the hub answered with a final error (400, 401, 403, ...)
    "invalid",  # bad input from the app, or an event that cannot be encoded
    "invalid_header",  # malformed pairing headers from the browser
    "name_not_allowed",  # a pairing name the route may not carry (a forged purchase)
    "unmatched",  # stamped, but no pattern and none of the browser SDK's rules matches the URL
    "read_only_method",  # stamped on a GET, HEAD or OPTIONS request (pair_read_only is off)
    "repeated_header",  # a pairing header sent more than once: refused without joining the lines
    "invalid_consent",  # the consent hook answered neither True nor False
    "invalid_trait",  # an identity trait that could not be normalised
    "pii_prop",  # a prop that names an identity field: never sent raw (the event goes without it)
    "invalid_prop",  # a prop JSON cannot carry or of the wrong type (the event goes without it)
    "too_large",  # the event is over the wire's size limit: refused when tracked, never queued
    "before_send",  # the before_send hook returned None
    "before_send_error",  # the before_send hook raised
    "internal_error",  # a bug of ours; the request went on
    "shutdown",  # still queued when the process ended
]
OnDrop = Callable[[Event, str], None]

DEDUP_SIZE = 10_000  # (event_id, event_name) pairs remembered as sent or in flight
QUICK_BACKOFF = 0.5  # the first of ``max_retries`` quick retries; doubles up to QUICK_BACKOFF_CAP
QUICK_BACKOFF_CAP = 4.0
SPREAD_START = 5.0  # after the quick retries, attempts grow geometrically from here...
BACKOFF_CAP = 24 * 3600.0  # ...to at most a day apart, so the last lands near the maximum age
SPREAD_FILL = 0.95  # the last attempt lands at 95 % of the maximum age, jitter included
REFUSED, QUEUED, WAKE = 0, 1, 2  # what submit() did
OUTAGE_PROBE_CAP = 30.0  # while the hub fails, new events wait at most this long for a probe
LINGER = 0.05  # a lone event waits this long for company before it is sent
# Under a steady flow (the last batch held BUSY_BATCH events or more) the wait stretches to
# LINGER_BUSY: a hub request costs far more than an event, so one request carries hundreds
# of events instead of a few dozen (bench/split.py: the sender's CPU per event), and a full
# batch still goes at once.
LINGER_BUSY = 0.25
BUSY_BATCH = 100
# Paired events are handed over without a lock (a deque append); the sender takes them in
# when it looks. Past this many waiting (or an eighth of the queue's cap), the request that
# adds one takes them in itself, so that the queue's bound and priorities hold while the
# sender is busy (a hanging hub): memory holds at most the cap plus this many.
INBOX_MAX = 512
_BATCH_OVERHEAD = 16  # '{"events":[' + ']}' and commas, near enough


@dataclass(frozen=True)
class Stats:
    """A snapshot of the sender. ``dropped`` counts events by :data:`DropReason`."""

    queued: int = 0
    in_flight: int = 0
    #: events this process accepted into the queue (not those read back from a spool: counted where queued)
    enqueued: int = 0
    sent: int = 0
    retried: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    last_status: int | None = None
    last_error: str | None = None
    hub_latency_ms: float | None = None
    worker_alive: bool = False
    #: events sent without a fleet-wide claim because Redis failed (``dedup_url``; per process)
    dedup_fallbacks: int = 0
    #: ``sender="celery"``: events the broker took (the workers deliver them; not counted in ``sent``)
    handed_off: int = 0


class Drop(NamedTuple):
    event: Event
    name: str
    event_id: str
    attempts: int
    reason: DropReason
    outcome: Outcome | None
    quiet: bool = False  # on_drop tracked it: on_drop is not told of its drop (see Queued.quiet)


class Reports(NamedTuple):
    """What :meth:`Sender.tell` logs and tells ``on_drop``, taken under the lock."""

    notes: list[tuple[int, str, tuple[object, ...]]]
    drops: list[Drop]


def backoff(
    attempts: int,
    *,
    max_retries: int,
    age: float,
    max_age: float,
    max_attempts: int,
    previous: float = 0.0,
    retry_after: float | None = None,
    jitter: float = 0.0,
) -> float | DropReason:
    """Seconds to wait after ``attempts`` failed attempts of an event ``age`` seconds
    old whose last wait was ``previous``, or why to give up.

    The first ``max_retries`` retries are quick (0.5 s, 1 s, 2 s...): a blip. Then the
    waits start at 5 s and grow by one ratio, chosen so that the remaining attempts
    reach the event's maximum age, each wait capped at a day: a short outage costs
    seconds, a long one is still retried until the end. ``jitter`` in [-1, 1] scales
    the wait by up to +-20 %.
    """
    if attempts >= max_attempts:
        return "retries_exhausted"
    delay: float
    waits_left = max_attempts - attempts
    quick = min(max_retries, max_attempts - 2)  # leave at least one attempt to spread
    if attempts <= quick:
        delay = min(QUICK_BACKOFF * 2 ** (attempts - 1), QUICK_BACKOFF_CAP)
    elif attempts == quick + 1 and waits_left > 1:
        delay = SPREAD_START
    else:
        delay = _spread(max(previous, SPREAD_START), waits_left, (max_age - age) * SPREAD_FILL)
    delay = min(delay * (1 + _wire.BACKOFF_JITTER * max(-1.0, min(jitter, 1.0))), BACKOFF_CAP)
    if waits_left == 1:  # the last wait: jitter must not push it past the maximum age
        delay = min(delay, (max_age - age) * SPREAD_FILL)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if age + delay > max_age:
        return "expired"
    return delay


def _spread(previous: float, waits: int, time_left: float) -> float:
    """The first of ``waits`` waits that grow from ``previous`` by one ratio, each capped
    at BACKOFF_CAP, and add up to ``time_left`` (the ratio found by bisection)."""

    def total(ratio: float) -> float:
        return sum(min(previous * ratio**i, BACKOFF_CAP) for i in range(1, waits + 1))

    if total(1.0) >= time_left:
        return min(previous, BACKOFF_CAP)
    lo, hi = 1.0, 2.0
    while total(hi) < time_left:
        if hi > 1e4:  # even capped waits cannot fill the time: wait the most we may
            return BACKOFF_CAP
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        if total(mid) < time_left:
            lo = mid
        else:
            hi = mid
    return min(previous * hi, BACKOFF_CAP)


class Sender:
    """The queue, the retry state and the statistics; thread-safe, no I/O.

    Drivers call :meth:`take` for the next batch (or how long to wait), send it, and
    hand the outcomes to :meth:`record`; drops found under the lock are reported by
    :meth:`report_drops`, which drivers call outside it (``on_drop`` is user code).
    """

    def __new__(cls, settings: Settings, **options: Any) -> Sender:
        # With a spool, the sender also keeps a journal of what changed for the spool's
        # writer; without one it is this class, and submit() costs what it always did.
        if cls is Sender and settings.spool_path is not None:
            cls = SpoolingSender
        return super().__new__(cls)

    #: Builds a paired request's event from its record (the client's builder), on the sender.
    build: Callable[[Paired], Event | None] | None = None

    def __init__(
        self,
        settings: Settings,
        *,
        on_drop: OnDrop | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        log: logging.Logger = logger,
    ) -> None:
        self.settings = settings
        self._on_drop = on_drop
        self._clock = clock
        self._rand = rand
        self.log = log
        self._log = RateLimitedLog(log)
        self.reset()
        self._observer: Observer | None = None  # metrics (make_worker sets it when asked)

    def reset(self) -> None:
        """A fresh, empty state: at start, and in a forked child (the parent's queue
        stays the parent's to send; a lock copied by fork may be held by a dead thread)."""
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._queue = EventQueue(self.settings.max_queue_size)
        self._inbox: deque[Paired | Event] = deque()  # records, and events with fresh ids
        self._inbox_max = min(INBOX_MAX, max(1, self.settings.max_queue_size // 8))
        # The driver waits for a wake-up, not a timer: a new event must wake it (see offer()).
        self.sleeping = True
        self._woken = False  # something changed since the driver last looked (see wait())
        self._seq = itertools.count()
        self._recent: OrderedDict[tuple[str, ...], None] = OrderedDict()  # see _claim_key
        self._in_flight = 0
        self._flushing = 0  # events a flush waits for
        self._flushes = 0  # flushes under way
        self._ready_since: float | None = None  # when the ready list last became non-empty
        self._last_batch = 0  # events in the last batch taken (see LINGER_BUSY)
        self._hold_until = 0.0  # the hub asked for a pause (Retry-After)
        self._failing_since: float | None = None  # the first failure of an outage
        self._notes: list[tuple[int, str, tuple[object, ...]]] = []  # logged outside the lock
        self._drops: list[Drop] = []
        self._reporting = 0  # report_drops() calls under way (a flush waits for their on_drop)
        self._sent = self._retried = self._duplicates = self._batches = self._enqueued = 0
        # sender="celery": an "ok" means the broker has the event, not the hub.
        self._handoff = self.settings.sender == "celery"
        self._handed_off = 0
        self._target = "the Celery broker" if self._handoff else "the hub"  # what the log blames
        self._dropped: dict[str, int] = {}
        self._last_status: int | None = None
        self._last_error: str | None = None
        self._latency: float | None = None

    # -- the caller's side (any thread, the request path) ---------------------------------
    def submit(self, event: Event, *, verified: bool = True) -> int:
        """Queue ``event`` unless its pair was already sent. Never blocks on I/O. Returns
        REFUSED (a duplicate, or no room for it), QUEUED, or WAKE: queued, and the driver
        should look (the queue was idle, or a batch is full). ``verified=False``: its id
        came from request headers (see :func:`_claim_key`)."""
        item = Queued(event if verified else HeaderEvent(event), 0, 0.0, verified=verified)
        item.quiet = in_on_drop()
        with self.lock:
            return self._push_new(item)

    def offer(self, record: Paired | Event) -> int:
        """Hand over a paired request's record, or an event whose id was just made (it
        cannot be a duplicate), without taking the lock: a deque append. Returns WAKE
        when the driver must be woken (it waits for no timer), else QUEUED. The duplicate
        check, the bound and the priorities apply when it is taken in."""
        inbox = self._inbox
        inbox.append(record)
        if len(inbox) >= self._inbox_max:
            with self.lock:
                return WAKE if self._absorb() else QUEUED
        return WAKE if self.sleeping else QUEUED

    def submit_paired(self, record: Paired) -> int:
        """:meth:`offer` with the lock: returns as :meth:`submit` (REFUSED: a duplicate)."""
        item = Queued.paired(record, 0, 0.0)
        item.quiet = in_on_drop()
        with self.lock:
            self._absorb()  # what came before it goes first
            return self._push_new(item)

    def _absorb(self) -> bool:
        """Must hold the lock. Take the handed-over records into the queue; True when
        the driver should look (see :meth:`_push`)."""
        inbox, wake = self._inbox, False
        while inbox:
            entry = inbox.popleft()
            if isinstance(entry, dict):  # an event the app tracked
                wake = self._push_new(Queued(entry, 0, 0.0)) == WAKE or wake
            else:
                wake = self._push_paired(entry) == WAKE or wake
        return wake

    def _push_paired(self, record: Paired) -> int:
        return self._push_new(Queued.paired(record, 0, 0.0))

    def _push_new(self, item: Queued) -> int:
        claim = _claim_key(item.key, item.verified)
        if item.key in self._recent or claim in self._recent:
            self._duplicates += 1
            return REFUSED
        self._claim(claim)
        return self._push(item)

    def claim(self, event: Event) -> bool:
        """Remember the event's pair as sent; False if it already was (see :meth:`submit`)."""
        key = (str(event.get("event_id", "")), str(event.get("event_name", "")))
        with self.lock:
            if key in self._recent:
                self._duplicates += 1
                return False
            self._claim(key)
            return True

    def enqueue_claimed(self, event: Event, *, failed: tuple[int, Outcome] | None = None) -> int:
        """Queue an event whose pair :meth:`claim` took; returns as :meth:`submit`. With
        ``failed=(attempts, outcome)`` (``send()`` could not deliver it in time), it
        waits the backoff of its next retry instead of being due now."""
        item = Queued(event, 0, 0.0)
        item.quiet = in_on_drop()
        with self.lock:
            done = self._push(item)
            if done != REFUSED and failed is not None:
                self._queue.remove(item)
                item.attempts = failed[0] - 1
                self._retry(item, failed[1], self._clock())
            return done

    def release(self, event: Event) -> None:
        """Forget a claimed pair that was not sent after all."""
        key = (str(event.get("event_id", "")), str(event.get("event_name", "")))
        with self.lock:
            self._recent.pop(key, None)

    def _claim(self, key: tuple[str, ...]) -> None:
        recent = self._recent
        recent[key] = None
        if len(recent) > DEDUP_SIZE:
            recent.popitem(last=False)

    def _push(self, item: Queued) -> int:
        """Must hold the lock."""
        now = self._clock()
        item.seq = next(self._seq)
        item.born = item.due = now
        queue = self._queue
        was_ready = queue.ready
        evicted = queue.push(item)
        if evicted is not None:
            self._drop(evicted, "queue_full")
        if evicted is item:
            self._signal()  # the worker reports the drop: on_drop never runs on the request path
            return REFUSED
        self._enqueued += 1
        if not was_ready:
            self._ready_since = now
        # Wake the driver when there is newly something to do or a full batch, not per
        # event: a woken worker sends small batches and fights the request for the GIL.
        if (not was_ready and not self._in_flight) or queue.ready == _wire.SERVER_BATCH_MAX_EVENTS or evicted:
            self._signal()
            return WAKE
        return QUEUED

    def refuse(self, reason: DropReason) -> None:
        """Count an event refused before it reached the queue (bad input, a forged header)."""
        with self.lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
        if self._observer is not None:
            self._observer.sync()

    # -- the driver's side -----------------------------------------------------------------
    def take(self, *, linger: float = LINGER) -> list[Queued] | float | None:
        """The next batch to send (marked in flight); or, when nothing is due, the
        seconds until something is (None: nothing queued). An empty batch means drops
        are waiting to be reported (:meth:`report_drops`, outside the lock). Takes the lock."""
        with self.lock:
            self._woken = False
            return self._next(linger)

    def _next(self, linger: float) -> list[Queued] | float | None:
        while True:
            self._absorb()
            step, wakes_itself = self._take(linger)
            # Waiting with no timer, or a long one: a new event must wake the driver. The
            # inbox is looked at again after saying so, as offer() appends before it looks
            # at ``sleeping``: one of the two sees the other.
            self.sleeping = not wakes_itself
            if wakes_itself or not self._inbox:
                return step

    def wait(self, timeout: float | None) -> None:
        """A driver's pause after :meth:`take` said wait: ``timeout`` seconds (None: until
        woken), or less if anything changed since that call (nothing is missed between them)."""
        with self.cond:
            if not self._woken:
                self.cond.wait(timeout)

    def wake(self) -> None:
        """Any thread: the driver should look now (an event came while it slept)."""
        with self.cond:
            self.sleeping = False
            self._signal()

    def nudge(self) -> None:
        """Make the driver look now (to see that it must stop), saying nothing of new work."""
        with self.cond:
            self._signal()

    def _signal(self) -> None:
        """Must hold the lock."""
        self._woken = True
        self.cond.notify_all()

    def _take(self, linger: float) -> tuple[list[Queued] | float | None, bool]:
        now = self._clock()
        queue = self._queue
        flushing = self._flushing > 0
        held = now < self._hold_until
        if not held:
            queue.promote(now)
        if queue.ready and self._ready_since is None:  # retries that just came due
            self._ready_since = now
        if queue.ready and not flushing:
            if held:  # a pause the hub asked for, or an outage: new events wait for the probe
                return self._hold_until - now, True
            if linger and self._last_batch >= BUSY_BATCH:
                linger = max(linger, LINGER_BUSY)
            wait = (self._ready_since or now) + linger - now
            if wait > 0 and queue.ready < _wire.SERVER_BATCH_MAX_EVENTS:
                return wait, True
        batch = self._batch(flush_only=held) if queue.ready else []
        if batch or self._drops:
            return batch, True
        if held:
            return self._hold_until - now, True
        next_due = queue.next_due()
        if next_due is None:
            return None, False
        wait = max(next_due - now, 0.0)
        return wait, wait <= linger

    def _batch(self, *, flush_only: bool) -> list[Queued]:
        queue, now = self._queue, self._clock()
        batch: list[Queued] = []
        skipped: list[Queued] = []
        while len(batch) < _wire.SERVER_BATCH_MAX_EVENTS:
            item = queue.pop_ready()
            if item is None:
                break
            if flush_only and not item.flush:  # during a Retry-After pause only a flush sends
                skipped.append(item)
                continue
            if now - item.born >= _wire.retry_policy(item.name)[0]:
                # Past its maximum age (its retry came due while nothing sent: the next event
                # of a sync sender hours later, a loop that ended): never sent, as restore().
                self._drop(item, "expired")
                continue
            batch.append(item)
        for item in reversed(skipped):
            queue.unpop(item)
        self._last_batch = len(batch)
        self._in_flight += len(batch)
        self._ready_since = now if queue.ready else None
        return batch

    def prepare(self, batch: list[Queued]) -> list[Queued]:
        """Call without the lock, between :meth:`take` and the send: build what was queued
        as a builder, encode, and cut the batch at the byte limit (the rest goes back,
        first in line). Events that can never be sent are dropped as ``invalid``; the driver
        reports them (:meth:`report_drops`), off the loop if it runs one (``on_drop``)."""
        ready: list[Queued] = []
        bad: list[tuple[Queued, DropReason | None]] = []
        rest: list[Queued] = []
        size = _BATCH_OVERHEAD
        for n, item in enumerate(batch):
            try:
                if not item.materialize(self.build):
                    bad.append((item, None))  # refused by its builder, which counted why
                    continue
                body = item.body
                if body is None:
                    body = item.body = encode_event(item.event)
            except Exception:  # not JSON-able (an object, a cycle), or a bug: it can never be sent
                bad.append((item, "invalid"))
                continue
            if len(body) + _BATCH_OVERHEAD > _wire.BATCH_MAX_BYTES:
                bad.append((item, "invalid"))
                continue
            if ready and size + len(body) + 1 > _wire.SERVER_BATCH_MAX_BYTES:
                rest = batch[n:]
                break
            ready.append(item)
            size += len(body) + 1
        if bad or rest:
            with self.lock:
                self._in_flight -= len(bad) + len(rest)
                for item, reason in bad:
                    self._drop(item, reason)
                for item in reversed(rest):
                    self._queue.unpop(item)
                if rest and self._ready_since is None:
                    self._ready_since = self._clock()
        return ready

    def materialize(self, item: Queued) -> bool:
        """Build ``item`` if it is a paired request's record (see :meth:`prepare`)."""
        return item.materialize(self.build)

    def record(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], latency: float | None) -> None:
        """What each event's outcome means for it; ``latency`` is the attempt's seconds."""
        with self.lock:
            self._record(batch, outcomes, latency)

    def _record(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], latency: float | None) -> None:
        now = self._clock()
        self._batches += 1
        self._in_flight -= len(batch)
        if latency is not None:
            self._latency = latency * 1000
        if len(outcomes) != len(batch):  # a broken custom transport: try again later
            outcomes = [Outcome("retry", None, None, "transport returned the wrong number of outcomes")] * len(batch)
        pause = 0.0
        for item, outcome in zip(batch, outcomes):
            owed = not item.flush and self._flushes > 0  # in flight when a flush began
            if item.flush:
                item.flush = False
                self._flushing = max(self._flushing - 1, 0)  # 0 after a flush that ended meanwhile
            if outcome.action == "duplicate":
                self._duplicates += 1
                continue
            self._last_status = outcome.status
            if outcome.action == "ok":
                self._count_ok()
                continue
            self._last_error = outcome.error
            if outcome.action == "drop":
                self._finish(item, "rejected", outcome)
                continue
            pause = max(pause, outcome.retry_after or 0.0)
            self._retry(item, outcome, now)
            if owed and item.state == PARKED:
                # That attempt began before the flush: the flush still owes the event one
                # (an exit drain would otherwise give up on it after a 429 it did not cause).
                self._queue.remove(item)
                self._queue.requeue(item)
                item.flush = True
                self._flushing += 1
                if self._ready_since is None:
                    self._ready_since = now
        if not pause and outcomes and all(o.action == "retry" and (o.status or 500) >= 500 for o in outcomes):
            # The hub is down or failing, not this batch: the next attempt probes it, and
            # what arrives meanwhile waits instead of failing a request per batch.
            due = min((item.due for item in batch if item.state == PARKED), default=now)
            pause = min(due - now, OUTAGE_PROBE_CAP)
        if pause > 0:
            self._hold_until = max(self._hold_until, now + pause)
        self._note_health(batch, outcomes, now)
        if self._observer is not None:
            self._observer.batch(batch, outcomes, latency)
        self._signal()

    def _note_health(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], now: float) -> None:
        """What the log says about delivery: a WARNING when an outage starts and when it
        ends, an INFO per failed attempt in between (logged outside the lock)."""
        failed = [o for o in outcomes if o.action == "retry"]
        if failed:
            error = failed[0].error or "no answer"
            if self._failing_since is None:
                self._failing_since = now
                self._notes.append(
                    (
                        logging.WARNING,
                        "%s is not taking events (%s): they are kept and retried; %d queued",
                        (self._target, error, len(self._queue) + self._in_flight),
                    )
                )
            else:
                self._notes.append((logging.INFO, "%d event(s) failed again (%s)", (len(failed), error)))
        elif self._failing_since is not None and any(o.action == "ok" for o in outcomes):
            self._notes.append(
                (
                    logging.WARNING,
                    "%s takes events again after %.0f s; %d still queued",
                    (self._target, now - self._failing_since, len(self._queue) + self._in_flight),
                )
            )
            self._failing_since = None

    def _retry(self, item: Queued, outcome: Outcome, now: float) -> None:
        item.attempts += 1
        meta = item.event.get("client_meta")
        if isinstance(meta, dict):  # the hub sees how many tries an event took
            meta["attempts"] = item.attempts
            item.body = None  # re-encode with the new count
        max_age, max_attempts = _wire.retry_policy(item.name)
        delay = backoff(
            item.attempts,
            max_retries=self.settings.max_retries,
            age=now - item.born,
            max_age=max_age,
            max_attempts=max_attempts,
            previous=item.delay,
            retry_after=outcome.retry_after,
            jitter=self._rand() * 2 - 1,
        )
        if isinstance(delay, str):
            self._finish(item, delay, outcome)
            return
        item.delay = delay
        self._retried += 1
        self._queue.park(item, now + delay)

    def abandon(self, batch: Sequence[Queued]) -> None:
        """A batch whose attempt was cancelled before it finished (the loop is closing):
        back to the queue, ready, no attempt counted."""
        with self.lock:
            self._in_flight -= len(batch)
            for item in batch:
                self._queue.requeue(item)
            if self._queue.ready and self._ready_since is None:
                self._ready_since = self._clock()
            self._signal()

    def _finish(self, item: Queued, reason: DropReason, outcome: Outcome | None = None) -> None:
        """An in-flight (or just popped) event will never be sent."""
        self._drop(item, reason, outcome)

    def _drop(self, item: Queued, reason: DropReason | None, outcome: Outcome | None = None) -> None:
        """Must hold the lock; the report waits for :meth:`report_drops`. ``reason`` None:
        refused by its builder, which counted and logged it."""
        self._queue.remove(item)
        if item.flush:
            item.flush = False
            self._flushing = max(self._flushing - 1, 0)
        self._recent.pop(_claim_key(item.key, item.verified), None)  # never delivered: the pair may come again
        if reason is not None:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
            drop = Drop(item.event, item.name, item.key[0], item.attempts, reason, outcome, item.quiet)
            self._drops.append(drop)

    def report_drops(self) -> None:
        """Log and call ``on_drop`` for the drops found so far (user code: never under the lock)."""
        self.tell(self.take_reports())

    def take_reports(self) -> Reports:
        """The drops and log lines found so far, for :meth:`tell` (which must follow)."""
        if self._observer is not None:  # after every batch, drops or not
            self._observer.sync()
        with self.lock:
            reports = Reports(self._notes, self._drops)
            self._notes, self._drops = [], []
            if reports.notes or reports.drops:
                self._reporting += 1  # a flush waits for these reports (wait_flush)
        return reports

    def tells_on_drop(self, reports: Reports) -> bool:
        """:meth:`tell` will run ``on_drop`` (user code: a driver on an event loop tells
        from a thread)."""
        return self._on_drop is not None and any(not drop.quiet for drop in reports.drops)

    def tell(self, reports: Reports) -> None:
        """Log ``reports`` and tell ``on_drop`` of its drops. Never under the lock."""
        if not reports.notes and not reports.drops:
            return
        try:
            for level, message, args in reports.notes:
                self.log.log(level, message, *args)
            for drop in reports.drops:
                self._report(drop)
        finally:
            with self.cond:
                self._reporting -= 1
                self.cond.notify_all()

    def _report(self, drop: Drop) -> None:
        outcome = drop.outcome
        detail = f" ({outcome.error})" if outcome and outcome.error else ""
        level = logging.ERROR if drop.name == "purchase" or drop.reason == "rejected" else logging.WARNING
        self._log.warn(
            f"drop:{drop.reason}",
            "dropped a %s event (%s) after %d attempts: %s%s",
            drop.name,
            drop.event_id,
            drop.attempts,
            drop.reason,
            detail,
            level=level,
        )
        if outcome is not None and outcome.status in (401, 403):
            self._log.warn(
                "auth",
                "the hub refused the secret key (HTTP %s); check LAYERSYNC_SECRET and LAYERSYNC_SITE_ID",
                outcome.status,
                level=logging.ERROR,
            )
        if self._on_drop is None or drop.quiet:
            return
        # A hook: what it tracks runs its before_send one level deeper (see MAX_HOOK_DEPTH)
        # and is never told to on_drop in turn.
        was_on_drop, hooks.on_drop = hooks.on_drop, True
        hooks.depth += 1
        try:
            self._on_drop(drop.event, drop.reason)
        except Exception:  # user code must not kill the worker
            self._log.warn("on_drop", "on_drop raised", level=logging.ERROR)
        finally:
            hooks.depth -= 1
            hooks.on_drop = was_on_drop

    # -- one event now (send()) ------------------------------------------------------------
    def note_attempt(self, outcome: Outcome, latency: float) -> None:
        """Statistics for an attempt made outside the queue (``send()``)."""
        with self.lock:
            self._latency = latency * 1000
            self._last_status = outcome.status
            if outcome.action == "ok":
                self._count_ok()
            else:
                self._last_error = outcome.error
        if self._observer is not None:
            self._observer.attempt(outcome, latency)

    def _count_ok(self) -> None:
        if self._handoff:
            self._handed_off += 1
        else:
            self._sent += 1

    def quick_retry_delay(self, attempt: int, outcome: Outcome) -> float:
        """The pause after the ``attempt``-th failed attempt of ``send()`` (1-based)."""
        quick: float = min(QUICK_BACKOFF * 2 ** (attempt - 1), QUICK_BACKOFF_CAP)
        return max(quick, outcome.retry_after or 0.0)

    # -- flush -----------------------------------------------------------------------------
    def begin_flush(self) -> int:
        """Every queued event is due now, for one attempt, Retry-After or not; returns
        how many a flush waits for (in-flight events included: one whose attempt fails
        gets another within the flush). When not 0, call :meth:`end_flush` after."""
        with self.lock:
            self._absorb()
            self._queue.make_all_ready()
            for item in self._queue:
                if not item.flush:
                    item.flush = True
                    self._flushing += 1
            waiting = self._flushing + self._in_flight
            if waiting:
                self._flushes += 1
            if self._queue.ready and self._ready_since is None:
                self._ready_since = self._clock()
            self._signal()
        return waiting

    def flush_done(self) -> bool:
        """Every event a flush waits for had its attempt."""
        with self.lock:
            return self._flushing <= 0 and self._in_flight == 0

    def _flushed(self) -> bool:
        return self._flushing <= 0 and self._in_flight == 0 and not self._drops and not self._reporting

    def wait_flush(self, deadline: float, still: Callable[[], bool]) -> None:
        """Wait until :meth:`flush_done` and the drops found meanwhile were reported (the
        driver's thread calls ``on_drop`` after it records: flush() returns after that, as
        an inline or asyncio driver's does), the ``deadline`` (this sender's clock) or
        ``still()`` is False (the driver that makes progress is gone), looking every 100 ms."""
        with self.cond:
            while not self._flushed() and still():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                self.cond.wait(min(remaining, 0.1))

    def end_flush(self) -> int:
        """Forget the flush; how many events are still queued or in flight."""
        with self.lock:
            self._flushes = max(self._flushes - 1, 0)
            for item in self._queue:
                item.flush = False
            self._flushing = 0
            return len(self._queue) + self._in_flight + len(self._inbox)

    @property
    def idle(self) -> bool:
        """Nothing queued or in flight."""
        return not len(self._queue) and not self._in_flight and not self._inbox

    def discard(self) -> int:
        """Everything still queued is dropped as ``shutdown``; returns how many."""
        with self.lock:
            items = list(self._queue)
            for item in items:
                self._drop(item, "shutdown")
        return len(items)

    # -- the spool (see :mod:`._spool`) ---------------------------------------------------------
    def restore(self, entries: Sequence[Restored]) -> int:
        """Queue events read back from the spool, oldest first, with their attempts and
        their age: one past its event name's maximum age or attempts is dropped and
        counted, not sent. Returns how many were queued."""
        queued = 0
        with self.lock:
            now = self._clock()
            for entry in entries:
                event = entry.event if entry.verified else HeaderEvent(entry.event)
                item = Queued(event, next(self._seq), now - max(entry.age, 0.0), verified=entry.verified)
                item.attempts = entry.attempts
                item.delay = entry.delay
                max_age, max_attempts = _wire.retry_policy(item.name)
                if entry.age >= max_age:
                    self._drop(item, "expired")
                    continue
                if item.attempts >= max_attempts:
                    self._drop(item, "retries_exhausted")
                    continue
                self._claim(_claim_key(item.key, item.verified))
                evicted = self._queue.push(item)
                if evicted is not None:
                    self._drop(evicted, "queue_full")
                if evicted is not item:
                    queued += 1
            if self._queue.ready and self._ready_since is None:
                self._ready_since = now
            self._signal()
        return queued

    def handover(self, items: Sequence[Queued]) -> int:
        """Forget ``items`` (those still queued) without counting a drop: the spool holds
        them now, for another process or the next start. Returns how many."""
        count = 0
        with self.lock:
            for item in items:
                if item.state in (READY, PARKED):
                    self._queue.remove(item)
                    if item.flush:
                        item.flush = False
                        self._flushing = max(self._flushing - 1, 0)
                    count += 1
            if not self._queue.ready:
                self._ready_since = None
            self._signal()
        return count

    def stats(self, worker_alive: bool = False) -> Stats:
        with self.lock:
            self._absorb()  # what was handed over is counted as queued or dropped, not apart
            return Stats(
                queued=len(self._queue) + self._in_flight,
                in_flight=self._in_flight,
                enqueued=self._enqueued,
                sent=self._sent,
                retried=self._retried,
                duplicates=self._duplicates,
                dropped=dict(self._dropped),
                batches=self._batches,
                last_status=self._last_status,
                last_error=self._last_error,
                hub_latency_ms=self._latency,
                worker_alive=worker_alive,
                handed_off=self._handed_off,
            )

    def queued_events(self) -> list[Queued]:
        """Ready and parked events (for a spool, a test or a debugger)."""
        with self.lock:
            self._absorb()
            return list(self._queue)


def _claim_key(key: tuple[str, str], verified: bool) -> tuple[str, ...]:
    """What an event claims in the memory of sent pairs. The app's own events claim the
    pair; an event whose id came from a request header claims it apart, so a browser
    that guessed the id of a later order (``order_123``) cannot suppress the app's own
    purchase. A header event is a duplicate of either claim; the app's, of its own only."""
    return key if verified else (*key, "header")


class Restored(NamedTuple):
    """An event read back from the spool."""

    event: Event
    attempts: int
    age: float  # seconds since it was first queued (wall clock: it may come from another process)
    verified: bool
    delay: float = 0.0  # its last backoff wait (the Celery task carries it from one run to the next)


ADD, GONE_OP = 0, 1  # journal entries: persist (or update) this event; forget it


class SpoolingSender(Sender):
    """A :class:`Sender` that also notes, under its lock, what the spool must write: an
    event queued or retried (``ADD``), an event sent or dropped (``GONE_OP``). The spool's
    writer takes the journal every few tens of milliseconds (:meth:`take_journal`); the
    caller never waits on the disk."""

    journal_wakeup: threading.Event  # set when the journal gets its first entry
    journaling: bool

    def reset(self) -> None:
        super().reset()
        self._journal: list[tuple[int, Queued]] = []
        self.journal_wakeup = threading.Event()  # new after a fork too: a copied lock may be held
        self.journaling = True

    def take_journal(self) -> list[tuple[int, Queued]]:
        """What changed since the last call, for the spool's writer."""
        with self.lock:
            journal, self._journal = self._journal, []
            return journal

    def take_everything(self) -> tuple[list[tuple[int, Queued]], list[Queued]]:
        """The journal and every queued event, at one moment (the spool's last write)."""
        with self.lock:
            self._absorb()
            journal, self._journal = self._journal, []
            return journal, list(self._queue)

    def _note(self, op: int, item: Queued) -> None:
        if not self.journaling:
            return
        journal = self._journal
        if not journal:
            self.journal_wakeup.set()
        journal.append((op, item))

    def offer(self, record: Paired | Event) -> int:
        # Durable: in the journal now (the spool's writer has it on disk within its window),
        # not when the sender next looks, which in an outage may be the next probe.
        self._inbox.append(record)
        with self.lock:
            return WAKE if self._absorb() else QUEUED

    def _push(self, item: Queued) -> int:
        done = super()._push(item)
        if done != REFUSED:
            self._note(ADD, item)
        return done

    def _drop(self, item: Queued, reason: DropReason | None, outcome: Outcome | None = None) -> None:
        super()._drop(item, reason, outcome)
        self._note(GONE_OP, item)

    def _record(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], latency: float | None) -> None:
        super()._record(batch, outcomes, latency)
        for item in batch:
            if item.state == PARKED:  # retried: its attempts changed
                self._note(ADD, item)
            elif item.state in (IN_FLIGHT, GONE):  # sent, a duplicate, or dropped
                self._note(GONE_OP, item)
