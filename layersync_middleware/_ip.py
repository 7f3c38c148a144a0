"""The client's IP address, with Express's ``trust proxy = N`` semantics.

``trust_proxy`` is the number of reverse proxies in front of the app. The chain is
``[socket peer, X-Forwarded-For entries right to left]``; the client is the entry
``trust_proxy`` steps along it, or the leftmost one when the chain is shorter. Every
proxy appends the address it received the request from, so the entries a client can
forge all sit to the left of the ones the trusted proxies wrote: with the right
``trust_proxy`` a forged ``X-Forwarded-For`` is never reached.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable


@functools.lru_cache(maxsize=4096)  # the same clients and proxies come back again and again
def parse_ip(value: str) -> str | None:
    """A normalised address from ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``; else None."""
    v = value.strip().strip('"')
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


def client_ip(peer: str | None, forwarded_for: Iterable[str], trust_proxy: int) -> str | None:
    """``forwarded_for`` holds the raw ``X-Forwarded-For`` header lines, in order."""
    peer_ip = parse_ip(peer) if peer else None
    if trust_proxy <= 0:
        return peer_ip
    entries = [e for line in forwarded_for for e in line.split(",")]
    chain = [peer_ip]
    for entry in reversed(entries):
        ip = parse_ip(entry)
        if ip is not None:
            chain.append(ip)
        if len(chain) > trust_proxy:
            break
    return chain[min(trust_proxy, len(chain) - 1)]
