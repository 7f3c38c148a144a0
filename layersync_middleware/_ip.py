"""The client's IP address, with Express's ``trust proxy = N`` semantics.

``trust_proxy`` is the number of reverse proxies in front of the app. The chain is
``[socket peer, X-Forwarded-For entries right to left]``; the client is the entry
``trust_proxy`` steps along it, or the leftmost one when the chain is shorter. Every
proxy appends the address it received the request from, so the entries a client can
forge all sit to the left of the ones the trusted proxies wrote: with the right
``trust_proxy`` a forged ``X-Forwarded-For`` is never reached.

Every entry counts as a hop, an IP address or not (as Express's ``proxy-addr``
counts them): a trusted proxy that writes ``unknown`` or ``_hidden`` must not hand
the step to the client's own entry on its left. When the chosen entry is not an
address, there is no client IP.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

# The longest spelling of an address we accept, bracketed IPv6 with a zone id and port
# included, fits easily; longer strings are not addresses and are never cached.
MAX_IP_TEXT = 64


def parse_ip(value: str) -> str | None:
    """A normalised address from ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``; else None."""
    v = value.strip().strip('"')
    if len(v) > MAX_IP_TEXT:
        return None
    return _parse_ip(v)


@functools.lru_cache(maxsize=1024)  # the same clients and proxies come back; at most 1024 x 64 chars
def _parse_ip(v: str) -> str | None:
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        v = v[1:end]
    elif v.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        v = v.partition(":")[0]
    v = v.partition("%")[0]  # an IPv6 zone id says nothing about the client
    try:
        addr = ipaddress.ip_address(v)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def forwarded_entry(lines: Iterable[str], trust_proxy: int) -> str | None:
    """The entry of a comma-separated ``X-Forwarded-*`` header that ``trust_proxy``
    proxies vouch for: ``trust_proxy`` from the right, or the leftmost when there are
    fewer. None without trust or without the header. Lines are joined in order."""
    if trust_proxy <= 0:
        return None
    joined = ",".join(lines)
    if not joined:
        return None
    # rsplit stops after trust_proxy cuts: a huge header costs one scan, no list of it.
    parts = joined.rsplit(",", trust_proxy)
    return parts[max(len(parts) - trust_proxy, 0)].strip()


def client_ip(peer: str | None, forwarded_for: Iterable[str], trust_proxy: int) -> str | None:
    """``forwarded_for`` holds the raw ``X-Forwarded-For`` header lines, in order."""
    entry = forwarded_entry(forwarded_for, trust_proxy)
    if entry is None:
        return parse_ip(peer) if peer else None
    return parse_ip(entry)
