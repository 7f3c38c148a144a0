from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from helpers import SECRET, LiveHub, settings

from layersync_middleware import ConfigurationError, Delivery, LayerSync
from layersync_middleware._delivery.transport import Outcome
from layersync_middleware._event import Event
from layersync_middleware.testing import MemoryTransport


def req(headers: dict[str, str] | None = None, path: str = "/api/cart/add", peer: str = "10.0.0.2") -> dict[str, Any]:
    raw = [(b"host", b"shop.example"), (b"user-agent", b"Mozilla/5.0 Test")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {
        "type": "http",
        "path": path,
        "root_path": "",
        "scheme": "https",
        "query_string": b"",
        "headers": raw,
        "client": (peer, 1234),
        "server": ("shop.example", 443),
    }


def test_track_returns_the_event_id_and_queues(sync_client: LayerSync, memory: MemoryTransport) -> None:
    eid = sync_client.track("purchase", {"order_id": "O-1", "value": 10, "currency": "USD"}, request=req())
    assert eid is not None and eid.startswith("pur_")
    [event] = memory.events
    assert event["event_id"] == eid
    assert event["user_data"]["client_ip_address"] == "10.0.0.2"
    assert event["user_data"]["user_agent"] == "Mozilla/5.0 Test"
    assert event["event_source_url"] == "https://shop.example/api/cart/add"
    assert event["custom_data"]["order_id"] == "O-1"


def test_caller_may_pass_its_own_event_id(sync_client: LayerSync, memory: MemoryTransport) -> None:
    assert sync_client.track("lead", event_id="lead_feedfacecafebeef") == "lead_feedfacecafebeef"
    assert sync_client.track("lead", event_id="bad id!") is None
    assert [e["event_id"] for e in memory.events] == ["lead_feedfacecafebeef"]


def test_track_with_identity_hashes_and_never_sends_raw(sync_client: LayerSync, memory: MemoryTransport) -> None:
    traits = {"email": "Ada@Example.com", "phone": "+1 650 555 1212", "first_name": "Ada", "last_name": "Lovelace"}
    sync_client.track_with_identity("purchase", traits, {"value": 1})
    [event] = memory.events
    assert set(event["user_data"]) == {"em", "ph", "fn", "ln"}
    text = repr(event).lower()
    assert "ada@example.com" not in text and "6505551212" not in text and "lovelace" not in text


def test_unusable_trait_is_dropped_counted_and_logged_by_name_only(
    sync_client: LayerSync, memory: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "layersync")
    sync_client.track_with_identity("lead", {"email": "ada@example.com", "phone": "no digits here"})
    assert set(memory.events[0]["user_data"]) == {"em"}
    assert sync_client.stats().dropped["invalid_trait"] == 1
    assert "'phone'" in caplog.text and "no digits here" not in caplog.text


def test_track_from_headers(sync_client: LayerSync, memory: MemoryTransport) -> None:
    headers = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
    assert sync_client.track_from_headers(req(headers), {"value": 10}) == "atc_0123456789abcdef"
    assert memory.events[0]["event_name"] == "add_to_cart"
    assert memory.events[0]["custom_data"] == {"value": 10}
    # the stale id again: forwarded once
    assert sync_client.track_from_headers(req(headers)) is None
    assert len(memory.events) == 1 and sync_client.stats().duplicates == 1


def test_track_from_headers_absent_or_forged(sync_client: LayerSync, memory: MemoryTransport) -> None:
    assert sync_client.track_from_headers(req()) is None
    forged = {"X-LayerSync-Event-Id": "pur_0123456789abcdef", "X-LayerSync-Event-Name": "purchase"}
    assert sync_client.track_from_headers(req(forged, path="/api/cart/add")) is None
    junk = {"X-LayerSync-Event-Id": "x" * 500, "X-LayerSync-Event-Name": "add_to_cart"}
    assert sync_client.track_from_headers(req(junk)) is None
    assert memory.events == []
    assert sync_client.stats().dropped == {"name_not_allowed": 1, "invalid_header": 1}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("",), {}),
        ((None,), {}),
        (("x" * 500,), {}),
        (("purchase", "not a mapping"), {}),
        (("purchase",), {"request": object()}),
        (("purchase",), {"identity": ["email"]}),
        (("purchase",), {"event_time": "yesterday"}),
    ],
)
def test_bad_input_never_raises(sync_client: LayerSync, memory: MemoryTransport, args: Any, kwargs: Any) -> None:
    assert sync_client.track(*args, **kwargs) is None
    assert memory.events == []
    assert sum(sync_client.stats().dropped.values()) == 1


def test_props_json_cannot_carry_are_dropped_and_the_event_still_goes(memory: MemoryTransport) -> None:
    client = LayerSync(settings(sender="sync"), transport=memory)
    assert client.track("lead", {"thing": object(), "plan": "pro", "email": "ada@example.com"}) is not None
    [event] = memory.events
    assert event["custom_data"] == {"plan": "pro"}
    assert client.stats().dropped == {"invalid_prop": 1, "pii_prop": 1}
    client.shutdown(0)


def test_disabled_client_does_nothing(memory: MemoryTransport) -> None:
    client = LayerSync(settings(enabled=False, sender="sync"), transport=memory)
    assert client.track("purchase") is None
    assert client.send("purchase").error == "disabled"
    pairing = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
    assert client.track_from_headers(req(pairing)) is None
    assert memory.events == [] and client.stats().dropped == {}


def test_shared_across_threads(memory: MemoryTransport) -> None:
    client = LayerSync(settings(), transport=memory)
    threads = [threading.Thread(target=lambda: [client.track("add_to_cart") for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(5) == 0
    assert len(memory.events) == 400
    assert len({e["event_id"] for e in memory.events}) == 400
    client.shutdown(1)


def test_send_delivers_now_against_the_hub(hub: LiveHub, hub_client: LayerSync) -> None:
    result = hub_client.send("purchase", {"order_id": "O-9", "value": 5}, identity={"email": "ada@example.com"})
    assert result.ok and result.status == 200 and not result.queued
    [stored] = hub.events("server")
    assert stored["event"]["event_id"] == result.event_id
    assert stored["hashed_fields"] == ["em"]


def test_send_reports_a_final_rejection(hub: LiveHub) -> None:
    client = LayerSync(settings(api_url=hub.url, secret_key="sk_wrong_key"))
    result = client.send("purchase")
    assert not result.ok and result.status == 401 and not result.queued
    assert hub.events() == []
    client.shutdown(0)


def test_send_is_bounded_by_the_timeout_and_queues_on_failure(hub: LiveHub) -> None:
    hub.faults(mode="hang", hang_seconds=5)
    client = LayerSync(settings(api_url=hub.url, timeout_ms=300, max_retries=0))
    started = time.monotonic()
    result = client.send("purchase", timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert not result.ok and result.queued  # the background sender keeps it
    assert client.stats().queued == 1
    hub.faults(mode=None)
    assert client.flush(3) == 0
    assert [e["event"]["event_id"] for e in hub.events("server")] == [result.event_id]
    client.shutdown(1)


def test_asend_does_not_block_the_loop(hub: LiveHub, hub_client: LayerSync) -> None:
    async def main() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)  # the scenario: a loop's other work, counting its turns

        task = asyncio.create_task(ticker())
        result = await hub_client.asend("lead", request=req())
        hub.faults(mode="hang", hang_seconds=1)
        slow = await hub_client.asend("lead", timeout=0.3)
        task.cancel()
        assert not slow.ok
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.ok and ticks >= 10


def test_from_env(memory: MemoryTransport) -> None:
    client = LayerSync.from_env(
        {"LAYERSYNC_SITE_ID": "site_1", "LAYERSYNC_SECRET": SECRET}, transport=memory, sender="sync"
    )
    client.track("lead")
    assert memory.events[0]["site_id"] == "site_1"


def test_context_manager_delivers_before_the_block_ends(hub: LiveHub) -> None:
    with LayerSync(settings(api_url=hub.url)) as client:
        client.track("purchase", {"order_id": "O-CTX"})
    assert [e["event"]["custom_data"]["order_id"] for e in hub.events("server")] == ["O-CTX"]
    assert not client.stats().worker_alive

    async def main() -> None:
        async with LayerSync(settings(api_url=hub.url, sender="asyncio")) as aclient:
            aclient.track("lead")

    asyncio.run(main())
    assert len(hub.events("server")) == 2


def test_overlong_urls_lose_their_query(sync_client: LayerSync, memory: MemoryTransport) -> None:
    long_query = {
        "type": "http",
        "path": "/p",
        "root_path": "",
        "scheme": "https",
        "headers": [(b"host", b"s.example")],
        "query_string": b"q=" + b"x" * 5000,
        "client": ("1.2.3.4", 1),
        "server": ("s", 443),
    }
    sync_client.track("page_view", request=long_query)
    sync_client.track("page_view", event_source_url="https://s.example/" + "y" * 5000)
    assert memory.events[0]["event_source_url"] == "https://s.example/p"
    assert "event_source_url" not in memory.events[1]


# -- before_send -------------------------------------------------------------------------------------
def test_before_send_can_change_or_drop_an_event(memory: MemoryTransport) -> None:
    def scrub(event: dict[str, Any]) -> dict[str, Any] | None:
        if event["custom_data"].get("test_order"):
            return None  # test traffic never leaves
        event["custom_data"]["store"] = "eu-1"  # a site-wide prop
        return event

    client = LayerSync(settings(sender="sync"), transport=memory, before_send=scrub)
    assert client.track("purchase", {"value": 1}) is not None
    assert client.track("purchase", {"test_order": True}) is None
    [event] = memory.events
    assert event["custom_data"]["store"] == "eu-1"
    assert client.stats().dropped == {"before_send": 1}
    assert client.send("lead", {"test_order": True}).error == "refused"


def test_a_raising_before_send_is_counted_never_raised(
    memory: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("bug in the hook")

    client = LayerSync(settings(sender="sync"), transport=memory, before_send=broken)
    assert client.track("purchase") is None
    assert memory.events == [] and client.stats().dropped == {"before_send_error": 1}
    assert "before_send raised KeyError" in caplog.text


def test_before_send_sees_paired_events_too(memory: MemoryTransport) -> None:
    seen: list[str] = []

    def spy(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event["event_id"])
        return event

    client = LayerSync(settings(sender="sync"), transport=memory, before_send=spy)
    headers = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}
    assert client.track_from_headers(req(headers)) == "atc_0123456789abcdef"
    assert seen == ["atc_0123456789abcdef"]


def test_a_refused_pairing_is_logged_every_time_at_debug(
    sync_client: LayerSync, caplog: pytest.LogCaptureFixture
) -> None:
    # The warning is rate-limited; a developer retrying still sees why at DEBUG.
    caplog.set_level(logging.DEBUG, "layersync")
    forged = {"X-LayerSync-Event-Id": "pur_0123456789abcdef", "X-LayerSync-Event-Name": "purchase"}
    for _ in range(3):
        assert sync_client.track_from_headers(req(forged)) is None
    refusals = [r for r in caplog.records if "refused the pairing header purchase" in r.getMessage()]
    assert len(refusals) >= 3 and refusals[0].levelname == "WARNING"
    assert "add_to_cart" in refusals[0].getMessage()  # what the route allows


# -- paired events are built off the request path ------------------------------------------------------
def test_a_paired_event_is_built_by_the_sender_not_the_request(memory: MemoryTransport) -> None:
    from layersync_middleware._pairing import PendingEvent

    threads: list[str] = []

    def spy(event: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return event

    client = LayerSync(settings(matcher=["/api/cart/*"]), transport=memory, before_send=spy)
    client._worker.wake = lambda: None  # type: ignore[method-assign]  # hold it in the queue
    items = [{"item_id": "SKU-A", "price": 10}]
    pending = PendingEvent("atc_0123456789abcdef", "add_to_cart")
    pending.update(items=items, value=10)
    request = req({"User-Agent": "Mozilla/5.0 Shopper"})
    assert client._track_paired(pending, request) == "atc_0123456789abcdef"
    [queued] = client._worker.sender.queued_events()
    assert queued.record is not None and threads == []  # nothing built yet: the request's record
    items[0]["price"] = 999  # the app changes its objects after the response: the event keeps the request's
    request["headers"].clear()
    del client._worker.wake
    assert client.flush(5) == 0
    [event] = memory.events
    assert event["custom_data"]["contents"][0]["item_price"] == 10
    assert event["user_data"]["user_agent"].endswith("Mozilla/5.0 Shopper")  # read from the copy
    assert threads == ["layersync-sender"]
    client.shutdown(1)


def test_a_paired_event_refused_when_built_is_counted_once(memory: MemoryTransport) -> None:
    from layersync_middleware._pairing import PendingEvent

    client = LayerSync(settings(sender="sync"), transport=memory, before_send=lambda event: None)
    assert client._track_paired(PendingEvent("atc_0123456789abcdef", "add_to_cart"), req()) is not None
    assert memory.events == []
    assert client.stats().dropped == {"before_send": 1} and client.stats().queued == 0
    # Refused, so not remembered as sent: the browser's re-send may go through.
    client._builder.before_send = None
    assert client._track_paired(PendingEvent("atc_0123456789abcdef", "add_to_cart"), req()) is not None
    assert len(memory.events) == 1


# -- what the client refuses, and what it never raises --------------------------------------------
def test_a_pair_sent_twice_reaches_the_transport_once(sync_client: LayerSync, memory: MemoryTransport) -> None:
    first = sync_client.send("purchase", {"value": 1}, event_id="pur_0123456789abcdef")
    again = sync_client.send("purchase", {"value": 1}, event_id="pur_0123456789abcdef")
    assert first.ok and again == Delivery(False, None, "pur_0123456789abcdef", "duplicate")
    assert [e["event_id"] for e in memory.events] == ["pur_0123456789abcdef"]
    assert sync_client.stats().duplicates == 1


def test_a_transport_that_raises_never_raises_into_send() -> None:
    class Broken(MemoryTransport):
        def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
            raise RuntimeError("a bug in a user's transport")

    client = LayerSync(settings(sender="sync"), transport=Broken())
    delivery = client.send("purchase", {"value": 1})
    # Counted as a failed attempt: kept for the background sender, as a network error is.
    assert (delivery.ok, delivery.error, delivery.queued) == (False, "RuntimeError", True)
    assert client.stats().queued == 1
    client.shutdown(0)


def test_an_unreadable_request_is_refused_and_counted_never_raised(
    sync_client: LayerSync, memory: MemoryTransport
) -> None:
    assert sync_client.track_from_headers(object()) is None
    refused = asyncio.run(sync_client.asend("lead", request=object()))
    assert refused == Delivery(False, None, None, "refused")
    assert memory.events == [] and sync_client.stats().dropped == {"invalid": 2}


def test_an_event_the_sender_cannot_take_is_counted_never_raised(
    sync_client: LayerSync, memory: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the queue broke")

    monkeypatch.setattr(sync_client._worker, "offer", broken)
    monkeypatch.setattr(sync_client._worker, "submit", broken)
    assert sync_client.track("lead") is None  # a fresh id: offered
    assert sync_client.track("lead", event_id="lead_feedfacecafebeef") is None  # the caller's id: submitted
    assert sync_client.stats().dropped == {"internal_error": 2} and memory.events == []


def test_options_next_to_settings_apply_and_a_wrong_one_is_named_at_start_up(memory: MemoryTransport) -> None:
    client = LayerSync(settings(), transport=memory, timeout_ms=2500)
    assert client.settings.timeout == 2.5
    with pytest.raises(ConfigurationError, match="timeout_msec"):
        LayerSync(settings(), transport=memory, timeout_msec=2500)
    with pytest.raises(TypeError, match="before_send must be a callable"):
        LayerSync(settings(), transport=memory, before_send="drop_pii")  # type: ignore[arg-type]


def test_send_with_no_time_left_queues_without_trying(sync_client: LayerSync, memory: MemoryTransport) -> None:
    delivery = sync_client.send("purchase", {"value": 1}, timeout=0)
    assert (delivery.ok, delivery.error, delivery.queued) == (False, "timed out", True)
    assert memory.events == []  # not tried now: the background sender has it
    assert sync_client.flush(1) == 0 and [e["event_id"] for e in memory.events] == [delivery.event_id]


def test_send_of_an_event_before_send_made_unencodable_is_dropped_not_queued(memory: MemoryTransport) -> None:
    def poison(event: Event) -> Event:
        event["custom_data"]["when"] = object()  # JSON cannot carry it
        return event

    client = LayerSync(settings(sender="sync"), transport=memory, before_send=poison)
    delivery = client.send("purchase", {"value": 1})
    assert not delivery.ok and not delivery.queued and (delivery.error or "").startswith("cannot encode")
    assert memory.events == [] and client.stats().queued == 0
    client.shutdown(0)


def test_send_of_a_pair_another_process_sent_is_a_duplicate_not_a_failure() -> None:
    elsewhere = MemoryTransport(lambda events: [Outcome("duplicate")] * len(events))  # the fleet's claim says so
    client = LayerSync(settings(sender="sync"), transport=elsewhere)
    delivery = client.send("purchase", event_id="pur_0123456789abcdef")
    assert delivery == Delivery(False, None, "pur_0123456789abcdef", "duplicate")
    assert client.stats().queued == 0 and elsewhere.events == []  # not retried, not stored as arrived
    client.shutdown(0)
