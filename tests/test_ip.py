from __future__ import annotations

import gc
import tracemalloc

import pytest

from layersync_middleware._ip import client_ip, forwarded_entry, parse_ip


@pytest.mark.parametrize(
    ("raw", "ip"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4:5678 ", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ('"1.2.3.4"', "1.2.3.4"),
        ("unknown", None),
        ("", None),
        ("[::1", None),
        ("999.1.1.1", None),
    ],
)
def test_parse_ip(raw: str, ip: str | None) -> None:
    assert parse_ip(raw) == ip


def test_no_trust_is_the_socket_peer() -> None:
    assert client_ip("10.0.0.2", ["6.6.6.6"], 0) == "10.0.0.2"


def test_one_hop_takes_the_rightmost_entry() -> None:
    assert client_ip("10.0.0.2", ["203.0.113.7"], 1) == "203.0.113.7"


def test_spoofed_leftmost_entries_are_never_reached() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; the load balancer appended the real address.
    assert client_ip("10.0.0.2", ["6.6.6.6, 203.0.113.7"], 1) == "203.0.113.7"
    # Two proxies: the first appended the client, the second appended the first proxy.
    assert client_ip("10.0.0.3", ["6.6.6.6, 1.1.1.1, 203.0.113.7, 10.0.0.2"], 2) == "203.0.113.7"


def test_spoofed_garbage_and_ports_are_skipped() -> None:
    assert client_ip("10.0.0.2", ["<script>, 203.0.113.7:5555"], 1) == "203.0.113.7"


def test_repeated_header_lines_are_joined_in_order() -> None:
    assert client_ip("10.0.0.3", ["6.6.6.6", "203.0.113.7, 10.0.0.2"], 2) == "203.0.113.7"
    assert client_ip("10.0.0.3", ["6.6.6.6", "203.0.113.7"], 1) == "203.0.113.7"


def test_more_hops_than_entries_gives_the_leftmost_like_express() -> None:
    assert client_ip("10.0.0.2", ["203.0.113.7"], 3) == "203.0.113.7"
    assert client_ip("10.0.0.2", [], 2) == "10.0.0.2"


def test_ipv6_in_brackets_with_port() -> None:
    assert client_ip("::1", ["[2001:db8::7]:1234"], 1) == "2001:db8::7"


def test_missing_peer() -> None:
    assert client_ip(None, [], 0) is None
    assert client_ip(None, ["203.0.113.7"], 1) == "203.0.113.7"


@pytest.mark.parametrize("token", ["unknown", "_hidden", "1.2.3.4\x00", ""])
def test_an_entry_that_is_no_address_still_counts_as_a_hop(token: str) -> None:
    # The trusted proxy wrote a token: the client's own (forged) entry on its left stays out of reach.
    assert client_ip("10.0.0.2", [f"6.6.6.6, {token}"], 1) is None
    assert client_ip("10.0.0.2", [f"6.6.6.6, 203.0.113.7, {token}"], 2) == "203.0.113.7"


def test_forwarded_entry_is_the_one_the_trusted_hops_vouch_for() -> None:
    assert forwarded_entry(["https"], 1) == "https"
    assert forwarded_entry(["http, https"], 1) == "https"
    assert forwarded_entry(["a, b", "c"], 2) == "b"
    assert forwarded_entry(["https"], 3) == "https"  # fewer entries than hops: the leftmost
    assert forwarded_entry(["https"], 0) is None
    assert forwarded_entry([], 1) is None


def test_huge_entries_are_not_kept_by_the_parse_cache() -> None:
    # 60 KB entries used to stay pinned in the lru_cache: about 240 MB per worker.
    parse_ip("1.2.3.4")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            assert client_ip("10.0.0.2", [f"{i:08d}" + "x" * 60_000], 1) is None
            assert parse_ip(f"{i:08d}" + "1" * 60_000) is None
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, kept  # 200 x 2 x 60 KB would be 24 MB


def test_a_long_forwarded_header_still_gives_the_trusted_hop() -> None:
    header = ", ".join(["6.6.6.6"] * 100_000 + ["203.0.113.7"])
    assert client_ip("10.0.0.2", [header], 1) == "203.0.113.7"
