from __future__ import annotations

import gzip
import json
import os
import time
from datetime import datetime, timezone

import httpcore
import pytest
from helpers import LiveHub, settings

from layersync_middleware import _wire
from layersync_middleware._delivery import transport
from layersync_middleware._delivery.transport import (
    HTTPTransport,
    Outcome,
    base_headers,
    classify,
    parse_retry_after,
    request_body,
)
from layersync_middleware._event import encode_event

EVENTS = [{"event_id": "a_0123456789", "event_name": "lead"}, {"event_id": "b_0123456789", "event_name": "lead"}]


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, "ok"),
        (202, "ok"),
        (400, "drop"),
        (401, "drop"),
        (403, "drop"),
        (404, "drop"),
        (413, "drop"),
        (422, "drop"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_status_classes(status: int, action: str) -> None:
    assert [o.action for o in classify(status, None, b"", EVENTS)] == [action, action]


def test_per_event_batch_outcomes_are_honoured() -> None:
    body = json.dumps(
        {"results": [{"event_id": "a_0123456789", "status": "drop"}, {"event_id": "b_0123456789", "status": "retry"}]}
    ).encode()
    assert [o.action for o in classify(200, None, body, EVENTS)] == ["drop", "retry"]


def test_batch_without_results_is_all_or_nothing() -> None:
    assert [o.action for o in classify(200, None, b"not json", EVENTS)] == ["ok", "ok"]


def test_retry_after_seconds_dates_and_cap() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("86400") == 300  # capped
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("soon") is None
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
    assert parse_retry_after("Tue, 01 Jan 2030 00:00:30 GMT", now=when.timestamp() - 30) == pytest.approx(30)
    # A date with no zone ("-0000") is read as UTC; "nan" is no wait at all, not a NaN one.
    assert parse_retry_after("Tue, 01 Jan 2030 00:00:30 -0000", now=when.timestamp() - 30) == pytest.approx(30)
    assert parse_retry_after("nan") is None
    assert classify(429, "3", b"", EVENTS[:1]) == [Outcome("retry", 429, 3.0, "HTTP 429")]


def test_single_and_batch_paths_and_gzip() -> None:
    path, data, headers = request_body([b'{"a":1}'])
    assert path == _wire.SERVER_EVENT_PATH and data == b'{"a":1}' and headers == {}
    big = [json.dumps({"pad": "x" * 3000}).encode()] * 2
    path, data, headers = request_body(big)
    assert path == _wire.SERVER_BATCH_PATH and headers == {"Content-Encoding": "gzip"}
    assert json.loads(gzip.decompress(data)) == {"events": [{"pad": "x" * 3000}] * 2}


def test_auth_headers() -> None:
    headers = base_headers(settings())
    assert headers["Authorization"].startswith("Bearer sk_")
    assert headers["X-LayerSync-Site-Id"] == "site_test"
    assert headers["User-Agent"].startswith("layersync-middleware/")


def test_http_transport_against_the_hub(hub: LiveHub) -> None:
    transport = HTTPTransport(settings(api_url=hub.url))
    events = [
        {
            "site_id": "site_test",
            "event_id": f"evt_{i:016x}",
            "event_name": "lead",
            "event_time": 1,
            "user_data": {},
            "custom_data": {"pad": "y" * 3000},
        }
        for i in range(3)
    ]
    outcomes = transport.send(events, [encode_event(e) for e in events], 5)
    assert [o.action for o in outcomes] == ["ok"] * 3  # gzip batch accepted and unpacked by the hub
    assert len(hub.events("server")) == 3
    bad = dict(events[0], event_id="evt_bad_0000000001", user_data={"em": "z" * 3000})
    good = dict(events[0], event_id="evt_good_000000001")
    outcomes = transport.send([bad, good], [encode_event(bad), encode_event(good)], 5)
    assert [o.action for o in outcomes] == ["drop", "ok"]
    transport.close()


def test_http_transport_network_errors_are_retries(hub: LiveHub) -> None:
    hub.faults(mode="drop")
    transport = HTTPTransport(settings(api_url=hub.url))
    [outcome] = transport.send(EVENTS[:1], [b"{}"], 5)
    assert outcome.action == "retry" and outcome.status is None
    transport.close()
    transport = HTTPTransport(settings(api_url="http://127.0.0.1:9"))  # nothing listens there
    assert transport.send(EVENTS[:1], [b"{}"], 1)[0].action == "retry"
    transport.close()


@pytest.mark.parametrize("mode", ["drip", "hang"])
def test_a_request_never_outlasts_its_total_deadline(hub: LiveHub, mode: str) -> None:
    # httpx's timeouts bound each read: a hub that drips its answer a byte at a time would
    # hold the request for ever. The transport's network backend bounds the whole request.
    import time

    hub.faults(mode=mode, drip_ms=200, hang_seconds=20)
    transport = HTTPTransport(settings(api_url=hub.url, timeout_ms=30_000))
    try:
        started = time.monotonic()
        [outcome] = transport.send(EVENTS[:1], [b'{"a":1}'], 1.0)
        assert time.monotonic() - started < 1.0 + 1.0
        assert outcome.action == "retry"
        hub.faults(mode=None)
        [outcome] = transport.send(EVENTS[:1], [b"{}"], 5.0)  # the same client works afterwards
        assert outcome.status is not None
    finally:
        transport.close()


def test_a_body_gzip_would_not_shrink_goes_as_it_is() -> None:
    body = os.urandom(_wire.GZIP_MIN_BYTES + 100)  # incompressible: gzip would only add its header
    assert request_body([body]) == (_wire.SERVER_EVENT_PATH, body, {})


class _Stream(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b""


def test_each_read_gets_what_is_left_of_the_requests_total_deadline() -> None:
    deadline = transport._Deadline()
    raw = _Stream()
    stream = transport._DeadlineStream(raw, deadline)
    stream.read(10, 5.0)
    deadline.at = time.monotonic() + 1.0
    stream.read(10, 5.0)
    stream.read(10, None)
    assert raw.timeouts[0] == 5.0 and all(0 < t <= 1.0 for t in raw.timeouts[1:] if t is not None)
    assert None not in raw.timeouts
    deadline.at = time.monotonic() - 0.001  # passed: no read at all
    with pytest.raises(httpcore.ReadTimeout, match="total deadline passed"):
        stream.read(10, 5.0)
    assert len(raw.timeouts) == 3
