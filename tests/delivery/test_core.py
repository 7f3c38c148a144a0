"""The sender's decisions, with a fake clock and no threads (the drivers: test_worker.py)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest
from helpers import make_event, settings

from layersync_middleware import _wire
from layersync_middleware._delivery import core
from layersync_middleware._delivery.core import (
    BUSY_BATCH,
    LINGER_BUSY,
    QUEUED,
    REFUSED,
    WAKE,
    Restored,
    Sender,
    backoff,
)
from layersync_middleware._delivery.queue import Queued
from layersync_middleware._delivery.transport import Outcome
from layersync_middleware._event import Event

event = make_event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A sender driven by hand: ``step()`` takes one batch and answers it from a script."""

    def __init__(self, *script: Outcome, drops: list[tuple[str, str]] | None = None, **options: Any) -> None:
        self.clock = Clock()
        self.drops: list[tuple[str, str]] = [] if drops is None else drops
        self.sender = Sender(
            settings(**options),
            clock=self.clock,
            rand=lambda: 0.5,  # no jitter
            on_drop=lambda e, r: self.drops.append((e["event_name"], r)),
        )
        self.script = list(script)
        self.calls: list[list[str]] = []

    def take(self, linger: float = 0.0) -> list[Queued] | float | None:
        return self.sender.take(linger=linger)

    def step(self, answer: Sequence[Outcome] | None = None, batch: object = None) -> list[Queued]:
        if batch is None:
            batch = self.take()
        self.sender.report_drops()
        if not isinstance(batch, list) or not batch:
            return []
        batch = self.sender.prepare(batch)  # as the drivers do: build, encode, cut at the byte limit
        if not batch:
            self.sender.report_drops()  # what prepare dropped (the driver tells on_drop)
            return []
        self.calls.append([i.key[0] for i in batch])
        outcomes = list(answer) if answer is not None else [self.script.pop(0) if self.script else OK] * len(batch)
        if len(outcomes) == 1 and len(batch) > 1:
            outcomes = outcomes * len(batch)
        self.sender.record(batch, outcomes, 0.01)
        self.sender.report_drops()
        return batch

    def run_until_idle(self, limit: int = 100) -> None:
        for _ in range(limit):
            step = self.take()
            if isinstance(step, list):
                self.step(batch=step)
                continue
            if step is None:
                return
            self.clock.now += step


OK = Outcome("ok", 200)
FAIL = Outcome("retry", 503, None, "HTTP 503")


# -- submitting ---------------------------------------------------------------------------------
def test_a_pair_is_forwarded_once() -> None:
    h = Harness()
    e = event()
    assert h.sender.submit(e) == WAKE
    assert h.sender.submit(dict(e)) == REFUSED
    assert h.sender.submit(dict(e, event_name="purchase")) != REFUSED
    h.run_until_idle()
    assert h.sender.stats().sent == 2 and h.sender.stats().duplicates == 1


def test_the_driver_is_woken_when_work_appears_or_a_batch_fills_not_per_event() -> None:
    h = Harness(max_queue_size=2000)
    answers = [h.sender.submit(event()) for _ in range(1200)]
    full = _wire.SERVER_BATCH_MAX_EVENTS
    assert answers[0] == WAKE and answers[full - 1] == WAKE
    assert answers.count(WAKE) == 2 and answers.count(QUEUED) == 1198


def test_a_lone_event_lingers_for_company_and_a_full_batch_does_not() -> None:
    h = Harness()
    h.sender.submit(event())
    assert h.take(linger=0.05) == pytest.approx(0.05)
    for _ in range(_wire.SERVER_BATCH_MAX_EVENTS - 1):
        h.sender.submit(event())
    batch = h.take(linger=0.05)
    assert isinstance(batch, list) and len(batch) == _wire.SERVER_BATCH_MAX_EVENTS


def test_under_a_steady_flow_the_wait_stretches_so_a_request_carries_hundreds() -> None:
    h = Harness(max_queue_size=2000)
    for _ in range(BUSY_BATCH):
        h.sender.submit(event())
    h.clock.now += 0.05
    busy = h.take(linger=0.05)
    assert isinstance(busy, list) and len(busy) == BUSY_BATCH
    h.sender.record(busy, [OK] * len(busy), 0.01)
    h.sender.submit(event())  # the flow goes on: the next batch waits longer for company
    assert h.take(linger=0.05) == pytest.approx(LINGER_BUSY)
    h.clock.now += LINGER_BUSY
    lone = h.take(linger=0.05)
    assert isinstance(lone, list) and len(lone) == 1
    h.sender.record(lone, [OK], 0.01)
    h.sender.submit(event())  # a lone event after a small batch waits the short linger again
    assert h.take(linger=0.05) == pytest.approx(0.05)
    assert h.take(linger=0.0) != pytest.approx(LINGER_BUSY)  # a flush or the inline sender never waits


def test_a_dropped_or_refused_pair_may_come_again() -> None:
    # Only delivered (or in-flight) pairs are remembered: after the hub recovers, the
    # browser's re-send of a pair that was dropped must go through.
    h = Harness(Outcome("drop", 422, None, "HTTP 422"))
    e = event()
    h.sender.submit(e)
    h.step()
    assert h.drops == [("add_to_cart", "rejected")]
    assert h.sender.submit(dict(e)) != REFUSED


def test_drops_found_on_submit_are_reported_by_the_driver_not_the_caller() -> None:
    h = Harness(max_queue_size=1)
    h.sender.submit(event("purchase"))
    assert h.sender.submit(event("page_view")) == REFUSED
    assert h.drops == []  # on_drop is user code: never on the request path
    h.sender.report_drops()
    assert h.drops == [("page_view", "queue_full")]
    assert h.sender.stats().dropped == {"queue_full": 1}


# -- retries and backoff --------------------------------------------------------------------------
def test_retries_are_quick_first_then_spread() -> None:
    h = Harness(*[FAIL] * 5, max_retries=2)
    h.sender.submit(event("purchase"))
    waits = []
    for _ in range(5):
        h.step()
        [item] = h.sender.queued_events()
        waits.append(item.due - h.clock.now)
        h.clock.now = item.due
    assert waits[:3] == pytest.approx([0.5, 1.0, 5.0])  # two quick retries, then 5 s...
    assert waits[3] > waits[2] and waits[4] > waits[3]  # ...growing from there
    h.step()
    assert h.sender.stats().sent == 1 and h.sender.stats().retried == 5


@pytest.mark.parametrize(
    ("name", "max_age"), [("purchase", 7 * 86400), ("add_to_cart", 86400), ("page_view", 6 * 3600)]
)
def test_an_event_is_retried_until_its_maximum_age(name: str, max_age: float) -> None:
    # Measured on the first release: a purchase was given up after 2.6 days of outage
    # and an add_to_cart after 13 minutes.
    h = Harness(*[FAIL] * 100)
    h.sender.submit(event(name))
    born = h.clock.now
    h.run_until_idle(limit=200)
    last_attempt = h.clock.now - born
    assert h.drops and h.drops[0][1] in ("expired", "retries_exhausted")
    assert 0.75 * max_age <= last_attempt <= max_age
    assert h.calls[:3] and len(h.calls) >= 3


def test_backoff_rules() -> None:
    rule = functools.partial(backoff, max_retries=2, max_age=86400.0, max_attempts=7)
    assert rule(1, age=0) == 0.5
    assert rule(7, age=0) == "retries_exhausted"
    assert rule(3, age=0) == 5.0  # the first spread wait
    longer = rule(4, age=100, previous=5.0)
    assert isinstance(longer, float) and longer > 5.0
    assert rule(1, age=0, retry_after=30.0) == 30.0  # Retry-After is a minimum
    assert rule(1, age=86399.9) == "expired"
    # Jitter never pushes the last attempt past the maximum age.
    last = rule(6, age=1000, previous=20000.0, jitter=1.0)
    assert isinstance(last, float) and 1000 + last < 86400


def test_retry_after_pauses_everything_but_a_flush() -> None:
    h = Harness(Outcome("retry", 429, 120.0, "HTTP 429"))
    h.sender.submit(event())
    h.step()
    h.sender.submit(event())  # the hub asked for a pause: a new event waits too
    assert h.take() == pytest.approx(120.0)
    assert h.sender.begin_flush() == 2
    batch = h.take()
    assert isinstance(batch, list) and len(batch) == 2  # a flush is asked for: it goes


def test_final_rejection_is_not_retried() -> None:
    h = Harness(Outcome("drop", 422, None, "HTTP 422"))
    h.sender.submit(event())
    h.step()
    assert h.drops == [("add_to_cart", "rejected")] and h.sender.stats().queued == 0


def test_a_failing_event_does_not_stall_the_rest() -> None:
    h = Harness()
    h.sender.submit(event("lead"))
    for _ in range(5):
        h.sender.submit(event("add_to_cart"))
    batch = h.take()
    assert isinstance(batch, list)
    outcomes = [FAIL if i.name == "lead" else OK for i in batch]
    h.sender.record(batch, outcomes, 0.01)
    stats = h.sender.stats()
    assert stats.sent == 5 and stats.queued == 1 and stats.in_flight == 0


def test_a_transport_answering_the_wrong_count_means_retry() -> None:
    h = Harness()
    h.sender.submit(event())
    h.step(answer=[])
    assert h.sender.stats().retried == 1 and "wrong number" in str(h.sender.stats().last_error)


def test_batches_respect_count_and_byte_limits() -> None:
    h = Harness(max_queue_size=2000)
    for _ in range(1200):
        h.sender.submit(event("lead"))
    for _ in range(40):
        h.sender.submit(event("lead", pad="x" * 30_000))
    sizes = []
    while True:
        batch = h.take()
        if not isinstance(batch, list) or not batch:
            break
        batch = h.sender.prepare(batch)
        sizes.append((len(batch), sum(len(i.body or b"") + 1 for i in batch)))
        h.sender.record(batch, [OK] * len(batch), 0.01)
    # Batches grow to the server bound while events wait, and a byte bound cuts them too.
    assert max(n for n, _ in sizes) == _wire.SERVER_BATCH_MAX_EVENTS and sum(n for n, _ in sizes) == 1240
    assert max(b for _, b in sizes) <= _wire.SERVER_BATCH_MAX_BYTES
    assert any(n < _wire.SERVER_BATCH_MAX_EVENTS and b > 900 * 1024 for n, b in sizes)


def test_events_that_cannot_be_sent_are_dropped_as_invalid() -> None:
    h = Harness()
    h.sender.submit(event("lead", pad="x" * 200_000))  # over the batch byte limit alone
    h.sender.submit({"event_id": "evt_0123456789", "event_name": "lead", "thing": object()})
    h.step()
    assert sorted(h.drops) == [("lead", "invalid"), ("lead", "invalid")]


def test_a_raising_on_drop_is_contained() -> None:
    def bad(e: Event, r: str) -> None:
        raise ValueError("user bug")

    sender = Sender(settings(max_queue_size=1), on_drop=bad)
    sender.submit(event("purchase"))
    sender.submit(event("page_view"))
    sender.report_drops()  # swallowed and logged
    assert sender.stats().dropped == {"queue_full": 1}


def test_a_cancelled_attempt_returns_its_batch() -> None:
    # asyncio.run() ending mid-send cancels the attempt: the events must not be stuck
    # in flight for ever (they were, and once they filled the queue nothing got in).
    h = Harness(max_queue_size=2)
    h.sender.submit(event())
    h.sender.submit(event())
    batch = h.take()
    assert isinstance(batch, list) and len(batch) == 2
    h.sender.abandon(batch)
    assert h.sender.stats().in_flight == 0 and h.sender.stats().queued == 2
    h.run_until_idle()
    assert h.sender.stats().sent == 2


def test_a_hand_made_event_without_client_meta_still_retries() -> None:
    h = Harness(FAIL)
    h.sender.submit({"event_id": "evt_handmade0001", "event_name": "lead"})
    h.step()
    [item] = h.sender.queued_events()
    assert item.attempts == 1
    h.run_until_idle()
    assert h.sender.stats().sent == 1


# -- flush ---------------------------------------------------------------------------------------
def test_a_flush_tries_parked_events_now_once() -> None:
    h = Harness(FAIL, FAIL)
    h.sender.submit(event())
    h.step()
    assert h.sender.begin_flush() == 1
    h.step()  # fails again: parked, and the flush is done with it
    assert h.sender.flush_done()
    assert h.sender.end_flush() == 1


def test_a_flush_owes_an_attempt_to_an_event_in_flight_when_it_began() -> None:
    # A Celery child drains as it ends: its one event was in flight and got a 429 with
    # Retry-After: 30 s. That attempt began before the flush; the flush still tries it.
    h = Harness(Outcome("retry", 429, 30.0, "HTTP 429"), OK)
    h.sender.submit(event("purchase"))
    batch = h.take()
    assert isinstance(batch, list) and len(batch) == 1
    assert h.sender.begin_flush() == 1  # the in-flight one
    h.step(batch=batch)
    assert not h.sender.flush_done()
    again = h.take()  # due now, through the Retry-After pause
    assert isinstance(again, list) and again == batch
    h.step(batch=again)
    assert h.sender.flush_done()
    assert h.sender.end_flush() == 0 and h.sender.stats().sent == 1


def test_stats_count_in_flight_events_as_queued() -> None:
    h = Harness()
    h.sender.submit(event())
    batch = h.take()
    assert isinstance(batch, list)
    stats = h.sender.stats()
    assert stats.queued == 1 and stats.in_flight == 1


def test_while_the_hub_is_down_new_events_wait_for_the_next_probe() -> None:
    # A hub that refuses connections must not cost a failed request per new batch: the
    # next attempt probes it, and what arrives meanwhile waits (bench: hub-down variant).
    h = Harness(Outcome("retry", None, None, "ConnectError"), max_retries=2)
    h.sender.submit(event())
    h.step()
    for _ in range(60):
        h.sender.submit(event())
    assert h.take() == pytest.approx(0.5)  # nothing goes before the probe, batch full or not
    h.clock.now += 0.5
    batch = h.take()
    assert isinstance(batch, list) and len(batch) == 61  # the probe and what waited for it
    # A batch the hub answered, even with some events to retry, holds nothing up.
    h.sender.record(batch, [Outcome("retry", 200, None, "hub asked to retry")] + [OK] * 60, 0.01)
    h.sender.submit(event())
    assert isinstance(h.take(linger=0.0), list)


# -- what the spool (or the Celery task) hands back ------------------------------------------------
def test_restored_events_past_their_age_or_attempts_are_dropped_and_the_rest_fit_the_queue() -> None:
    h = Harness(max_queue_size=2)
    max_age, max_attempts = _wire.retry_policy("add_to_cart")
    old, tired = event("add_to_cart"), event("add_to_cart")
    fresh = [event("page_view"), event("add_to_cart"), event("purchase")]
    restored = [
        Restored(old, 0, max_age, True),
        Restored(tired, max_attempts, 1.0, True),
        *(Restored(e, 1, 1.0, True) for e in fresh),
    ]
    h.sender.restore(restored)
    assert h.sender.stats().queued == 2  # the page view made room for the purchase
    h.sender.report_drops()
    assert sorted(h.drops) == sorted(
        [("add_to_cart", "expired"), ("add_to_cart", "retries_exhausted"), ("page_view", "queue_full")]
    )
    h.run_until_idle()
    assert sorted(c for call in h.calls for c in call) == sorted([fresh[1]["event_id"], fresh[2]["event_id"]])


def test_the_memory_of_sent_pairs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "DEDUP_SIZE", 3)
    h = Harness()
    pairs = [event("add_to_cart") for _ in range(4)]
    assert all(h.sender.claim(e) for e in pairs)  # the first is forgotten when the fourth comes
    assert h.sender.claim(pairs[0])  # so it may go again
    assert not any(h.sender.claim(e) for e in pairs[2:])  # the newest are still remembered
    assert h.sender.stats().duplicates == 2
