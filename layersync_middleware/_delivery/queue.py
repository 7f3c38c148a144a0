"""The sender's queue: bounded, by priority, with every operation O(log n) or better.

An event is in exactly one place: *ready* (due now; a FIFO per priority), *parked*
(waiting for a retry; a heap by due time) or *in flight* (in a batch being sent).
Ready and parked events are also indexed by ``(priority, verified)`` in insertion
order, which is what eviction needs: the oldest event of the lowest priority goes
first. Removal from the FIFOs and the heap is lazy (a state check when popped), so
nothing ever scans the queue on the request path. Not thread-safe: the sender's lock
guards it.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .. import _wire
from .._event import Event

if TYPE_CHECKING:
    from .._build import Paired

READY, PARKED, IN_FLIGHT, GONE = 0, 1, 2, 3

_materializing = threading.RLock()  # the sender and the spool's writer may both want one


class Queued:
    """One event in the sender, with its retry state."""

    __slots__ = (
        "attempts",
        "body",
        "born",
        "delay",
        "due",
        "event",
        "flush",
        "key",
        "name",
        "priority",
        "quiet",
        "record",
        "refused",
        "seq",
        "state",
        "verified",
    )

    def __init__(self, event: Event, seq: int, now: float, *, verified: bool = True) -> None:
        self.event = event
        self.record: Paired | None = None  # a paired request not built yet (see :meth:`paired`)
        self.name = str(event.get("event_name", ""))
        self.key = (str(event.get("event_id", "")), self.name)
        self.priority = _wire.priority(self.name)
        self.seq = seq
        self.born = now
        self.due = now
        self.attempts = 0
        self.delay = 0.0  # the last wait before a retry
        self.state = GONE
        self.flush = False  # a flush is waiting for this event's next attempt
        self.verified = verified  # False: it came from browser headers, not from app code
        self.body: bytes | None = None  # the encoded event, cached across retries
        self.refused = False  # refused when built: never sent
        self.quiet = False  # tracked from inside on_drop: a drop of it is not told to on_drop

    @classmethod
    def paired(cls, record: Paired, seq: int, now: float) -> Queued:
        """A paired request's event: ``event`` holds only its id and name until the
        sender builds it (:meth:`materialize`)."""
        item = cls({"event_id": record.event_id, "event_name": record.event_name}, seq, now, verified=False)
        item.record = record
        return item

    def materialize(self, build: Callable[[Paired], Event | None] | None) -> bool:
        """Build the event if it is still a paired request's record. False: refused when
        built (the builder counted why). Thread-safe."""
        if self.record is None:
            return not self.refused
        with _materializing:  # uncontended but for the spool's writer
            record = self._take_record()
            if record is None:  # built meanwhile
                return not self.refused
            event = build(record) if build is not None else None
            if event is None:
                self.refused = True
                return False
            self.event = event
            return True

    def _take_record(self) -> Paired | None:
        record, self.record = self.record, None
        return record

    def __repr__(self) -> str:
        return f"<Queued {self.name} {self.key[0]} attempts={self.attempts}>"


class EventQueue:
    """Ready and parked events, bounded by ``cap``; in-flight events are counted apart."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.unverified_cap = max(1, cap // 2)
        self._index: dict[tuple[int, bool], OrderedDict[int, Queued]] = {}
        self._ready: dict[int, deque[Queued]] = {}
        self._parked: list[tuple[float, int, Queued]] = []
        self._priorities: list[int] = []  # ascending, every priority ever seen
        self.queued = 0  # ready + parked
        self.ready = 0
        self.unverified = 0

    def __len__(self) -> int:
        return self.queued

    def __iter__(self) -> Iterator[Queued]:
        """Ready and parked events, highest priority first."""
        for prio in reversed(self._priorities):
            for verified in (True, False):
                yield from self._index.get((prio, verified), {}).values()

    # -- adding and removing ---------------------------------------------------------------
    def push(self, item: Queued) -> Queued | None:
        """Add ``item`` as ready; returns the event evicted to make room (maybe ``item``)."""
        victim = None
        # Browser-stamped events may fill only part of the queue: a flood of forged
        # headers during an outage cannot push out the app's own purchases.
        unverified_full = not item.verified and self.unverified >= self.unverified_cap
        if unverified_full or self.queued >= self.cap:
            victim = self._victim(item.priority, only_unverified=unverified_full)
            if victim is None:
                return item
            self.remove(victim)
        self._add_index(item)
        self._make_ready(item)
        return victim

    def _add_index(self, item: Queued) -> None:
        key = (item.priority, item.verified)
        bucket = self._index.get(key)
        if bucket is None:
            bucket = self._index[key] = OrderedDict()
            if item.priority not in self._priorities:
                self._priorities.append(item.priority)
                self._priorities.sort()
        bucket[item.seq] = item
        self.queued += 1
        if not item.verified:
            self.unverified += 1

    def _make_ready(self, item: Queued) -> None:
        item.state = READY
        fifo = self._ready.get(item.priority)
        if fifo is None:
            fifo = self._ready[item.priority] = deque()
        fifo.append(item)
        self.ready += 1

    def _victim(self, priority: int, *, only_unverified: bool) -> Queued | None:
        kinds = (False,) if only_unverified else (False, True)
        for prio in self._priorities:
            if prio > priority:
                return None
            for verified in kinds:
                bucket = self._index.get((prio, verified))
                if bucket:
                    return next(iter(bucket.values()))
        return None

    def remove(self, item: Queued) -> None:
        """Take a ready or parked event out of the queue for good."""
        if item.state in (READY, PARKED):
            bucket = self._index[(item.priority, item.verified)]
            del bucket[item.seq]
            self.queued -= 1
            if not item.verified:
                self.unverified -= 1
            if item.state == READY:
                self.ready -= 1
                item.state = GONE
                fifo = self._ready[item.priority]
                while fifo and fifo[0].state != READY:  # keep lazily removed entries from piling up
                    fifo.popleft()
        item.state = GONE

    def park(self, item: Queued, due: float) -> None:
        """An in-flight event that failed waits until ``due``."""
        self._add_index(item)
        item.due = due
        item.state = PARKED
        heapq.heappush(self._parked, (due, item.seq, item))
        if len(self._parked) > 2 * self.queued + 64:  # evicted entries linger until due: compact
            self._parked = [entry for entry in self._parked if entry[2].state == PARKED]
            heapq.heapify(self._parked)

    def requeue(self, item: Queued) -> None:
        """An in-flight event whose attempt never happened goes back, ready."""
        self._add_index(item)
        self._make_ready(item)

    # -- taking ----------------------------------------------------------------------------
    def promote(self, now: float) -> None:
        """Parked events whose time has come become ready."""
        parked = self._parked
        while parked and parked[0][0] <= now:
            _, _, item = heapq.heappop(parked)
            if item.state == PARKED and item.due <= now:
                self.ready += 1
                item.state = READY
                self._ready.setdefault(item.priority, deque()).append(item)

    def next_due(self) -> float | None:
        parked = self._parked
        while parked and parked[0][2].state != PARKED:
            heapq.heappop(parked)
        return parked[0][0] if parked else None

    def pop_ready(self) -> Queued | None:
        """The next ready event, highest priority first, oldest first; now in flight."""
        for prio in reversed(self._priorities):
            fifo = self._ready.get(prio)
            while fifo:
                item = fifo.popleft()
                if item.state == READY:
                    self.remove(item)
                    item.state = IN_FLIGHT
                    return item
        return None

    def unpop(self, item: Queued) -> None:
        """Put back an event just popped (it did not fit the batch): first in line again."""
        self._add_index(item)
        item.state = READY
        self._ready[item.priority].appendleft(item)
        self.ready += 1

    def make_all_ready(self) -> int:
        """Every parked event becomes ready (a flush); returns how many are queued."""
        for _, _, item in self._parked:
            if item.state == PARKED:
                item.state = READY
                self.ready += 1
                self._ready.setdefault(item.priority, deque()).append(item)
        self._parked.clear()
        return self.queued
