"""One table of delivery scenarios, run against every driver of the sender's rules.

The drivers (:mod:`layersync_middleware._delivery.drivers`'s inline, thread and asyncio workers,
and the Celery worker's ``deliver`` task in :mod:`layersync_middleware.celery`) only wait
and do I/O; :class:`~layersync_middleware._delivery.core.Sender` decides. So for the same hub
answers every driver must show the same observable results: which events went in which
request (with the attempt count the hub sees), the waits the rules asked for (read from
the sender: each event's ``due``, or the Celery retry's ``due``), what was dropped and why
(``on_drop``), and the counters (``stats()``). Where a driver differs by design, the table
says so and the test asserts that driver's documented behaviour explicitly.

Time is fake: one clock drives the sender (``clock=``), the Celery task's clocks, and the
events' ``queued_at_ms``; the jitter is fixed (``rand=``), so a day-long backoff takes no
time and every driver computes it to the same float. Each driver is driven through its
own entry point for "deliver what is due now": the inline worker's wake-up (what
``submit`` does), ``flush()`` for the thread worker and ``aflush()`` for the asyncio
worker (their own loops send on timers, which a fake clock cannot drive without racing
them; the attempts still go through the thread's and the task's own send path), and one
run of the ``deliver`` task's message for Celery.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import SITE, settings

import layersync_middleware.celery as ls_celery
from layersync_middleware import _wire
from layersync_middleware._delivery import lifecycle
from layersync_middleware._delivery.core import Sender
from layersync_middleware._delivery.drivers import AsyncioWorker, InlineWorker, ThreadWorker, Worker
from layersync_middleware._delivery.handoff import CONFIG_WAIT_MAX
from layersync_middleware._delivery.transport import Outcome, classify
from layersync_middleware._event import Event, assemble, encode_event
from layersync_middleware._settings import Settings

SLOW_ON_DROP = 0.01
START = 1_000_000.0  # the fake clock's first reading (seconds; the events' queued_at_ms agrees)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


# -- the hub: answers from a script, records every request -------------------------------------
@dataclass(frozen=True)
class Answer:
    """What the hub answers one request: a status, a ``Retry-After``, a 207-style body."""

    status: int = 200
    retry_after: str | None = None
    results: dict[str, str] | None = None  # event id -> "ok" | "retry" | "drop"

    def outcomes(self, events: Sequence[Event]) -> list[Outcome]:
        body = b""
        if self.results is not None:
            body = json.dumps({"results": [{"event_id": k, "status": v} for k, v in self.results.items()]}).encode()
        return classify(self.status, self.retry_after, body, events)  # what HTTPTransport makes of it


class Reset:
    """The connection drops and the transport raises (a transport must not; if one does,
    the driver treats it as a network error)."""


@dataclass(frozen=True)
class Said:
    """The transport's own answer for every event, without an HTTP status: a network error
    as HTTPTransport reports one, a pair another process sent as ``dedup_url``'s does."""

    outcome: Outcome


OK = Answer()
NETWORK_ERROR = Said(Outcome("retry", None, None, "RemoteProtocolError"))
SENT_ELSEWHERE = Said(Outcome("duplicate"))
Step = Answer | Reset | Said


class ScriptedHub:
    """A transport (sync and async) that answers each request from ``script`` (200 once it
    runs out) and records each request's events as ``id#attempts``, as the wire carries them."""

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.requests: list[list[str]] = []
        self.callers: set[str] = set()  # who sent: "send" from which thread, or "asend"

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        self.callers.add(f"send from {threading.current_thread().name}")
        return self._answer(bodies, events)

    async def asend(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        self.callers.add("asend")
        return self._answer(bodies, events)

    def _answer(self, bodies: Sequence[bytes], events: Sequence[Event]) -> list[Outcome]:
        sent = [json.loads(body) for body in bodies]
        self.requests.append([f"{e['event_id']}#{e['client_meta']['attempts']}" for e in sent])
        answer = self.script.pop(0) if self.script else OK
        if isinstance(answer, Reset):
            raise ConnectionResetError("connection reset by peer")
        if isinstance(answer, Said):
            return [answer.outcome] * len(events)
        return answer.outcomes(events)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def events(clock: Clock, count: int, name: str, size: int = 0) -> list[Event]:
    """``ev1``, ``ev2``...: built now (fake time), each with a ``size``-character prop."""
    props = [{"value": i, "text": "x" * size} for i in range(1, count + 1)]
    return [assemble(SITE.site_id, name, f"ev{p['value']}", p, {}, None, queued_at=clock.now) for p in props]


# -- the drivers ------------------------------------------------------------------------------
@dataclass
class Counters:
    sent: int = 0
    retried: int = 0
    duplicates: int = 0
    batches: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class Driver(ABC):
    """What the scenarios do to a driver, and what they read from it."""

    #: How it reaches the hub (:attr:`ScriptedHub.callers`): its own send path, not a fallback.
    sends_by: str

    def __init__(self, clock: Clock, hub: ScriptedHub, chosen: Settings) -> None:
        self.clock = clock
        self.hub = hub
        self.settings = chosen
        self.drops: list[tuple[int, str, str]] = []
        self.step = 0  # which delivery or flush of the scenario is under way

    def on_drop(self, event: Event, reason: str) -> None:
        # User code that takes its time (not synchronisation): a driver must not return from
        # a delivery or flush before it ran, or the drop lands in a later step, or nowhere.
        time.sleep(SLOW_ON_DROP)
        self.drops.append((self.step, str(event["event_id"]), reason))

    @abstractmethod
    async def queue(self, batch: list[Event]) -> None:
        """The app's events reach the driver (nothing is sent yet)."""

    @abstractmethod
    async def deliver(self) -> None:
        """The driver sends what is due now."""

    @abstractmethod
    async def flush(self) -> None: ...

    @abstractmethod
    def left(self) -> dict[str, float]:
        """Each event still owed: seconds until the rules let it be tried again."""

    @abstractmethod
    def counters(self) -> Counters: ...

    @abstractmethod
    async def close(self) -> None: ...


class InProcess(Driver):
    worker: Worker

    def __init__(self, clock: Clock, hub: ScriptedHub, chosen: Settings) -> None:
        super().__init__(clock, hub, chosen)
        self.sender = Sender(chosen, clock=clock, rand=lambda: 0.5, on_drop=self.on_drop)  # 0.5: no jitter
        self.worker = self.make(self.sender)

    @abstractmethod
    def make(self, sender: Sender) -> Worker: ...

    async def queue(self, batch: list[Event]) -> None:
        for event in batch:  # the caller's side is the Sender's, the same for every driver
            self.sender.submit(event)

    async def flush(self) -> None:
        self.worker.flush()

    def left(self) -> dict[str, float]:
        return {item.key[0]: item.due - self.clock.now for item in self.sender.queued_events()}

    def counters(self) -> Counters:
        s = self.worker.stats()
        return Counters(s.sent, s.retried, s.duplicates, s.batches, s.dropped)

    async def close(self) -> None:
        self.worker.shutdown(1.0)
        lifecycle.WORKERS.discard(self.worker)


class Inline(InProcess):
    sends_by = "send from MainThread"

    def make(self, sender: Sender) -> Worker:
        return InlineWorker(sender, lambda: self.hub)

    async def deliver(self) -> None:
        self.worker.wake()  # what submit() does: deliver what is due, in the caller


class Thread(InProcess):
    sends_by = "send from layersync-sender"

    def make(self, sender: Sender) -> Worker:
        return ThreadWorker(sender, lambda: self.hub)

    async def deliver(self) -> None:
        self.worker.flush()  # the thread sends; flush() waits for it


class Asyncio(InProcess):
    sends_by = "asend"

    def make(self, sender: Sender) -> Worker:
        return AsyncioWorker(sender, lambda: self.hub, lambda: self.hub)

    async def deliver(self) -> None:
        await self.worker.aflush()  # the task on this loop sends; aflush() waits for it

    async def flush(self) -> None:
        await self.worker.aflush()

    async def close(self) -> None:
        await self.worker.ashutdown(1.0)
        lifecycle.WORKERS.discard(self.worker)


class Retried(Exception):
    def __init__(self, args: list[Any], countdown: int, why: Exception) -> None:
        super().__init__("retry")
        self.task_args = args
        self.countdown = countdown
        self.why = why


class FakeTask:
    """The bound ``deliver`` task as Celery hands it to ``_deliver``: ``retry()`` gives the
    next message's arguments and countdown (raised, as Celery's own)."""

    app = SimpleNamespace(conf=SimpleNamespace(broker_url="memory://", broker_transport_options={}))

    def __init__(self, retries: int) -> None:
        self.request = SimpleNamespace(retries=retries)

    def retry(self, *, args: list[Any], countdown: int, exc: Exception, **_: Any) -> Retried:
        return Retried(args, countdown, exc)


class CeleryTask(Driver):
    """The worker's ``deliver`` task: the web process handed the batch to the broker as one
    message; each :meth:`deliver` is Celery running the message (the first, or a retry)."""

    sends_by = "send from MainThread"

    def __init__(self, clock: Clock, hub: ScriptedHub, chosen: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(clock, hub, chosen)
        # The task's wall and monotonic clocks, and its Sender's clock and jitter: the fake ones.
        monkeypatch.setattr(ls_celery, "time", SimpleNamespace(time=clock, monotonic=clock))
        monkeypatch.setattr(ls_celery, "Sender", functools.partial(Sender, clock=clock, rand=lambda: 0.5))
        monkeypatch.setattr(ls_celery, "_worker", (os.getpid(), chosen, hub))  # the worker's settings and transport
        monkeypatch.setattr(ls_celery, "_on_drop", self.on_drop)
        self.baseline = ls_celery.delivery_stats()
        self.message: list[Any] | None = None
        self.retries = 0

    async def queue(self, batch: list[Event]) -> None:
        meta = {"v": 2, "site_id": str(self.settings.site_id), "key": ls_celery.key_fingerprint(self.settings)}
        self.message = [ls_celery.pack([encode_event(e) for e in batch]), self.clock.now, meta]

    async def deliver(self) -> None:
        if self.message is None:
            return
        try:
            ls_celery._deliver(FakeTask(self.retries), *self.message)
        except Retried as retry:
            self.message, self.retries = retry.task_args, self.retries + 1
            waits = self.left().values()
            if "cannot deliver" in str(retry.why):  # a worker that cannot deliver: soon, for another worker
                assert retry.countdown <= CONFIG_WAIT_MAX
                return
            # Celery runs the retry after ``countdown`` whole seconds: never before the
            # earliest event is due and within a second of it, or at most RETRY_BACKOFF_MAX
            # (it then comes back early and waits again).
            due = max(1, math.ceil(min(waits)))
            assert retry.countdown == min(due, ls_celery.RETRY_BACKOFF_MAX), (retry.countdown, waits)
        else:
            self.message = None

    async def flush(self) -> None:
        # The worker has no flush: Celery runs the message when its countdown ends, or
        # early when the broker gives it back. Events not due within a second then wait
        # again, unsent (celery.py: "An event whose backoff is longer comes back early and
        # waits again"). The scenarios' flush is that early run.
        await self.deliver()

    async def close(self) -> None:
        self.message = None  # nothing runs it again: the broker's copy ends with the test

    def owed(self) -> list[Event]:
        return [json.loads(body) for body in ls_celery.unpack(self.message[0])] if self.message else []

    def left(self) -> dict[str, float]:
        if self.message is None:
            return {}
        dues = self.message[2].get("due") or [self.clock.now] * len(self.owed())
        return {str(e["event_id"]): due - self.clock.now for e, due in zip(self.owed(), dues)}

    def counters(self) -> Counters:
        now, then = ls_celery.delivery_stats(), self.baseline
        dropped = {k: n - then.dropped.get(k, 0) for k, n in now.dropped.items() if n != then.dropped.get(k, 0)}
        return Counters(
            now.sent - then.sent,
            now.retried - then.retried,
            now.duplicates - then.duplicates,
            now.batches - then.batches,
            dropped,
        )


IN_PROCESS: dict[str, type[Inline | Thread | Asyncio]] = {"inline": Inline, "thread": Thread, "asyncio": Asyncio}
DRIVERS = [*IN_PROCESS, "celery"]


def make_driver(kind: str, clock: Clock, hub: ScriptedHub, chosen: Settings, mp: pytest.MonkeyPatch) -> Driver:
    if kind == "celery":
        return CeleryTask(clock, hub, chosen, mp)
    return IN_PROCESS[kind](clock, hub, chosen)


# -- the scenarios ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """What a scenario observed: the requests (``id#attempts`` each), the waits left after
    each delivery or flush (event id -> seconds), the drops (during which delivery or
    flush, 1-based; which event; why), the counters."""

    requests: list[list[str]]
    waits: list[dict[str, float]]
    drops: list[tuple[int, str, str]]
    counters: Counters


@dataclass(frozen=True)
class Scenario:
    id: str
    answers: tuple[Step, ...]
    # "deliver", "flush", "advance" (to the earliest due), "late" (LATE seconds pass with
    # nothing sent: a sync sender's next event hours later, a loop that ended, a broker backlog)
    steps: tuple[str, ...]
    expected: Seen
    count: int = 3
    name: str = "add_to_cart"
    size: int = 0  # characters of text in each event
    # Where the Celery task differs by design (see each scenario's comment).
    celery: Seen | None = None


def ids(*names: str, attempts: int = 0) -> list[str]:
    return [f"{name}#{attempts}" for name in names]


def span(first: int, last: int) -> list[str]:
    return ids(*(f"ev{i}" for i in range(first, last + 1)))


LATE = 7 * 3600.0  # past page_view's maximum age of 6 h
LAST_WAIT = round((6 * 3600 - 0.5) * 0.95, 6)  # page_view: its last retry lands at 95 % of its 6 h maximum age

SCENARIOS = [
    Scenario(
        "200",
        (OK,),
        ("deliver",),
        Seen([ids("ev1", "ev2", "ev3")], [{}], [], Counters(sent=3, batches=1)),
    ),
    Scenario(
        "batch-cut-by-count",
        (OK, OK),
        ("deliver",),
        Seen([span(1, 500), span(501, 501)], [{}], [], Counters(sent=501, batches=2)),
        count=_wire.SERVER_BATCH_MAX_EVENTS + 1,
    ),
    Scenario(
        "batch-cut-by-bytes",
        (OK, OK),
        ("deliver",),
        Seen([span(1, 11), span(12, 12)], [{}], [], Counters(sent=12, batches=2)),
        count=12,
        size=90_000,  # eleven fit in a request's 1,000 KiB
    ),
    Scenario(
        "207-per-event-results",
        (Answer(207, results={"ev1": "ok", "ev2": "retry", "ev3": "drop"}), OK),
        ("deliver", "advance", "deliver"),
        Seen(
            [ids("ev1", "ev2", "ev3"), ids("ev2", attempts=1)],
            [{"ev2": 0.5}, {}],
            [(1, "ev3", "rejected")],
            Counters(sent=2, retried=1, batches=2, dropped={"rejected": 1}),
        ),
    ),
    Scenario(
        "sent-by-another-process",
        (SENT_ELSEWHERE,),
        ("deliver",),
        Seen([ids("ev1", "ev2")], [{}], [], Counters(duplicates=2, batches=1)),
        count=2,
    ),
    Scenario(
        "429-retry-after",
        (Answer(429, retry_after="7"), OK),
        ("deliver", "advance", "deliver"),
        Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2", attempts=1)],
            [{"ev1": 7.0, "ev2": 7.0}, {}],
            [],
            Counters(sent=2, retried=2, batches=2),
        ),
        count=2,
    ),
    Scenario(
        "5xx-until-max-age",
        (Answer(503), Answer(503), Answer(503)),
        ("deliver", "advance", "deliver", "advance", "deliver"),
        Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2", attempts=1), ids("ev1", "ev2", attempts=2)],
            [{"ev1": 0.5, "ev2": 0.5}, {"ev1": LAST_WAIT, "ev2": LAST_WAIT}, {}],
            [(3, "ev1", "retries_exhausted"), (3, "ev2", "retries_exhausted")],
            Counters(retried=4, batches=3, dropped={"retries_exhausted": 2}),
        ),
        count=2,
        name="page_view",  # 6 h, 3 attempts
    ),
    Scenario(
        "5xx-then-due-past-max-age",
        (Answer(503),),
        ("deliver", "late", "deliver"),
        # An event whose retry comes due after its maximum age is dropped, not sent.
        Seen(
            [ids("ev1", "ev2")],
            [{"ev1": 0.5, "ev2": 0.5}, {}],
            [(2, "ev1", "expired"), (2, "ev2", "expired")],
            Counters(retried=2, batches=1, dropped={"expired": 2}),
        ),
        count=2,
        name="page_view",
    ),
    Scenario(
        "401",
        (Answer(401), OK),
        ("deliver", "advance", "deliver"),
        # In the process a refused key is final: each event is dropped as rejected (and
        # the log says to check the key).
        Seen(
            [ids("ev1", "ev2")],
            [{}, {}],
            [(1, "ev1", "rejected"), (1, "ev2", "rejected")],
            Counters(batches=1, dropped={"rejected": 2}),
        ),
        count=2,
        # A Celery worker whose key the hub refuses is misconfigured, not the events: it
        # counts no attempt, drops nothing and puts them back for a worker that can deliver
        # (celery.py, "The worker"); the next run (here a worker with the right key) sends
        # them, attempts still 0.
        celery=Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2")],
            [{"ev1": 0.0, "ev2": 0.0}, {}],
            [],
            Counters(sent=2, batches=1),
        ),
    ),
    Scenario(
        "dropped-connection",
        (Reset(), NETWORK_ERROR, OK),
        ("deliver", "advance", "deliver", "advance", "deliver"),
        Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2", attempts=1), ids("ev1", "ev2", attempts=2)],
            [{"ev1": 0.5, "ev2": 0.5}, {"ev1": 1.0, "ev2": 1.0}, {}],
            [],
            Counters(sent=2, retried=4, batches=3),
        ),
        count=2,
    ),
    Scenario(
        "flush-during-backoff",
        (Answer(429, retry_after="30"), OK),
        ("deliver", "flush", "advance", "deliver"),
        # A flush makes every parked event due for one attempt, Retry-After or not.
        Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2", attempts=1)],
            [{"ev1": 30.0, "ev2": 30.0}, {}, {}],
            [],
            Counters(sent=2, retried=2, batches=2),
        ),
        count=2,
        # The Celery worker has no flush: a run before the events are due (the broker gave
        # the message back early) leaves them waiting, unsent, their due unchanged; the run
        # at the due sends them.
        celery=Seen(
            [ids("ev1", "ev2"), ids("ev1", "ev2", attempts=1)],
            [{"ev1": 30.0, "ev2": 30.0}, {"ev1": 30.0, "ev2": 30.0}, {}],
            [],
            Counters(sent=2, retried=2, batches=2),
        ),
    ),
]


async def play(scenario: Scenario, driver: Driver) -> Seen:
    waits: list[dict[str, float]] = []
    await driver.queue(events(driver.clock, scenario.count, scenario.name, scenario.size))
    for step in scenario.steps:
        if step == "advance":
            left = driver.left()
            driver.clock.now += min(left.values(), default=0.0)
            continue
        if step == "late":
            driver.clock.now += LATE
            continue
        driver.step += 1
        if step == "flush":
            await driver.flush()
        else:
            await driver.deliver()
        # To the microsecond: the Celery task recomputes an event's age from its timestamps.
        waits.append({eid: round(wait, 6) for eid, wait in driver.left().items()})
    return Seen(list(driver.hub.requests), waits, list(driver.drops), driver.counters())


@pytest.mark.parametrize("kind", DRIVERS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_every_driver_applies_the_same_rules(scenario: Scenario, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, hub = Clock(), ScriptedHub(*scenario.answers)

    async def run(driver: Driver) -> tuple[Seen, set[str]]:
        try:
            return await play(scenario, driver), set(hub.callers)
        finally:
            await driver.close()

    driver = make_driver(kind, clock, hub, settings(), monkeypatch)
    seen, callers = asyncio.run(run(driver))
    expected = scenario.celery if kind == "celery" and scenario.celery is not None else scenario.expected
    assert seen == expected
    assert callers == {driver.sends_by}  # its own send path, not a fallback


# -- the spool at flush and at aflush -----------------------------------------------------------
def spooled(path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(path, timeout=5)
    try:
        return list(db.execute("SELECT event_id, attempts FROM events ORDER BY event_id"))
    finally:
        db.close()


@pytest.mark.parametrize(
    ("kind", "how"),
    [(kind, how) for kind in IN_PROCESS for how in ("flush", "aflush")] + [("celery", "run")],
)
def test_what_is_left_after_a_flush_is_on_disk_when_it_returns(
    kind: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    hub = ScriptedHub(Answer(207, results={"ev1": "ok", "ev2": "retry", "ev3": "drop"}))
    path = tmp_path / "spool.db"

    async def run() -> tuple[list[list[str]], list[tuple[str, int]], dict[str, float], list[Event]]:
        driver = make_driver(kind, clock, hub, settings(spool_path=str(path)), monkeypatch)
        try:
            await driver.queue(events(clock, 3, "add_to_cart"))
            if isinstance(driver, InProcess) and how == "flush":
                driver.worker.flush()  # the blocking one, the asyncio worker's too
            elif isinstance(driver, InProcess):
                await driver.worker.aflush()
            else:
                await driver.deliver()
            on_disk = spooled(path) if path.exists() else []
            owed = driver.owed() if isinstance(driver, CeleryTask) else []
            return list(hub.requests), on_disk, driver.left(), owed
        finally:
            await driver.close()

    requests, on_disk, left, owed = asyncio.run(run())
    assert requests == [ids("ev1", "ev2", "ev3")]
    assert left == {"ev2": 0.5}
    if kind == "celery":
        # The task keeps no spool (it delivers for a broker that holds the message): what
        # is left is in the retry's message, attempts counted; nothing is written to disk.
        assert not path.exists()
        assert [(e["event_id"], e["client_meta"]["attempts"]) for e in owed] == [("ev2", 1)]
    else:
        # Sent (ev1) and dropped (ev3) events are gone from the file; the retried one is
        # there with its attempt counted, by the time flush()/aflush() returns.
        assert on_disk == [("ev2", 1)]
