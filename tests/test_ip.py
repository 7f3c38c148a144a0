from __future__ import annotations

import pytest

from layersync_middleware._ip import client_ip, parse_ip


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
