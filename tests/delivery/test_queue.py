from __future__ import annotations

import time

from helpers import make_event

from layersync_middleware._delivery.queue import IN_FLIGHT, READY, EventQueue, Queued

event = make_event


def item(name: str, seq: int, *, verified: bool = True) -> Queued:
    it = Queued(event(name), seq, 0.0, verified=verified)
    return it


def test_full_queue_evicts_lowest_priority_oldest_first() -> None:
    q = EventQueue(3)
    items = [item(n, i) for i, n in enumerate(["page_view", "add_to_cart", "page_view"])]
    for it in items:
        assert q.push(it) is None
    purchase = item("purchase", 9)
    assert q.push(purchase) is items[0]  # the oldest page_view goes
    assert [i.name for i in q] == ["purchase", "add_to_cart", "page_view"]
    late_view = item("page_view", 10)
    assert q.push(late_view) is items[2]  # same priority: the older one goes
    lowest = item("search", 11)
    assert q.push(lowest) is late_view  # a higher-priority newcomer evicts the page_view
    assert [i.name for i in q] == ["purchase", "add_to_cart", "search"]


def test_a_newcomer_lower_than_everything_is_itself_dropped() -> None:
    q = EventQueue(1)
    q.push(item("purchase", 0))
    newcomer = item("page_view", 1)
    assert q.push(newcomer) is newcomer
    assert len(q) == 1


def test_browser_stamped_events_fill_at_most_half_the_queue() -> None:
    # A flood of forged pairing headers during an outage must not evict the app's purchases.
    q = EventQueue(10)
    own = [item("purchase", i) for i in range(4)]
    for it in own:
        assert q.push(it) is None
    forged = [item("purchase", 100 + i, verified=False) for i in range(50)]
    evicted = [q.push(it) for it in forged]
    assert all(v is None or not v.verified for v in evicted)
    assert all(it.state == READY for it in own)
    assert q.unverified == 5 and len(q) == 9


def test_ready_events_go_by_priority_then_age_and_parked_ones_when_due() -> None:
    q = EventQueue(10)
    a, b, c = item("page_view", 1), item("purchase", 2), item("page_view", 3)
    for it in (a, b, c):
        q.push(it)
    first = q.pop_ready()
    assert first is b and first.state == IN_FLIGHT and len(q) == 2
    q.park(b, due=50.0)
    assert q.pop_ready() is a and q.pop_ready() is c and q.pop_ready() is None
    q.promote(49.0)
    assert q.pop_ready() is None and q.next_due() == 50.0
    q.promote(50.0)
    assert q.pop_ready() is b


def test_every_operation_stays_fast_at_the_largest_cap() -> None:
    # Not a benchmark: an O(n) scan per event would take minutes at this size.
    cap = 1_000_000
    q = EventQueue(cap)
    started = time.monotonic()
    for seq in range(cap + 20_000):
        q.push(Queued({"event_id": f"evt_{seq:012d}", "event_name": "add_to_cart"}, seq, 0.0))
    assert len(q) == cap
    for _ in range(1000):
        got = q.pop_ready()
        assert got is not None
        q.park(got, due=10.0)
    assert time.monotonic() - started < 30


def test_evicted_entries_do_not_pile_up() -> None:
    q = EventQueue(10)
    for seq in range(10_000):
        it = item("add_to_cart", seq)
        q.push(it)
        popped = q.pop_ready()
        assert popped is not None
        q.park(popped, due=1e9)  # parked for ever, then evicted by newer ones
    assert len(q) == 10 and len(q._parked) <= 2 * 10 + 64
    assert sum(len(f) for f in q._ready.values()) <= 20


def test_a_paired_item_is_made_with_every_field_a_queued_event_has() -> None:
    from layersync_middleware._build import Paired
    from layersync_middleware._request import RequestContext

    request = RequestContext(None, {}, "https", "shop.example", "/cart", "/cart", "")
    record = Paired("atc_0123456789abcdef", "add_to_cart", 0.0, {}, (), 0, None, request)
    paired = Queued.paired(record, 7, 1.5)  # made field by field, for speed: none may be missed
    plain = Queued({"event_id": "atc_0123456789abcdef", "event_name": "add_to_cart"}, 7, 1.5, verified=False)
    for name in Queued.__slots__:
        if name != "record":
            assert getattr(paired, name) == getattr(plain, name), name
    assert paired.record is record
