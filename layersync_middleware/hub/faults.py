"""Fault injection: what the hub does to ingest requests when asked to be sick.

The settings are a :class:`Faults` (validated on construction, so a wrong type is a 400
at ``POST /api/hub/faults`` rather than a broken hub); :class:`FaultSwitch` holds the
ones in force and counts the requests they hit. The faults that act below HTTP
(``drip`` writes the status line byte by byte, ``reset`` sends a TCP RST) need the
connection's transport, which :func:`raw_transport` finds under uvicorn; under
another server they fall back to the nearest ASGI-level behaviour.
"""

from __future__ import annotations

import asyncio
import http
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast, get_args

from starlette.types import Send

Mode = Literal["500", "429", "hang", "drip", "reset", "drop"]
Target = Literal["server", "browser", "all"]
MODES: tuple[str, ...] = get_args(Mode)
TARGETS: tuple[str, ...] = get_args(Target)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number_problem(name: str, value: object, low: float, high: float, *, whole: bool) -> str | None:
    # bool is an int to Python but not to JSON; NaN fails the range test.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (whole and not isinstance(value, int))
        or not low <= value <= high
    ):
        kind = "a whole number" if whole else "a number"
        return f"{name} must be {kind} from {low:g} to {high:g}, got {_short(value)}"
    return None


@dataclass(frozen=True)
class Faults:
    """Fault settings; see the ``layersync_middleware.hub`` docstring for each field."""

    mode: Mode | None = None
    target: Target = "server"
    rate: float = 1.0
    every: int = 1
    count: int | None = None
    retry_after: int = 1
    hang_seconds: float = 30.0
    drip_ms: int = 1000

    def __post_init__(self) -> None:
        problems = [
            None if self.mode is None or self.mode in MODES else f"mode must be one of {', '.join(MODES)} or null",
            None if self.target in TARGETS else f"target must be one of {', '.join(TARGETS)}",
            _number_problem("rate", self.rate, 0, 1, whole=False),
            _number_problem("every", self.every, 1, 1000, whole=True),
            None if self.count is None else _number_problem("count", self.count, 0, 1_000_000, whole=True),
            _number_problem("retry_after", self.retry_after, 0, 86_400, whole=True),
            _number_problem("hang_seconds", self.hang_seconds, 0, 600, whole=False),
            _number_problem("drip_ms", self.drip_ms, 1, 10_000, whole=True),
        ]
        found = [p for p in problems if p is not None]
        if found:
            raise ValueError("; ".join(found))

    @classmethod
    def from_json(cls, doc: object) -> Faults:
        """Faults from a JSON document; raises ValueError with a message for the caller."""
        if not isinstance(doc, dict):
            raise ValueError("fault settings are a JSON object")
        known = {f.name for f in fields(cls)}
        # "hits" is read-only, but accepted so that a GET's answer can be posted back.
        unknown = sorted(set(doc) - known - {"hits"})
        if unknown:
            raise ValueError(f"unknown fault setting(s) {_short(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in doc.items() if k in known})


class FaultSwitch:
    """The faults in force and their counters (one event loop uses it: no lock)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = Faults()
        self.seen = 0
        self.hits = 0
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.seen = 0
        self.hits = 0

    def pick(self, source: str) -> Mode | None:
        """The fault for this ingest request from ``source`` ("server"/"browser"), if any."""
        faults = self.faults
        if faults.mode is None or faults.target not in (source, "all"):
            return None
        if faults.count is not None and self.hits >= faults.count:
            return None
        self.seen += 1
        if (self.seen - 1) % faults.every:  # every=2: the 1st, 3rd, 5th... request
            return None
        if faults.rate < 1.0 and random.random() >= faults.rate:
            return None
        self.hits += 1
        return faults.mode

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.faults), "hits": self.hits}


def raw_transport(send: Send) -> asyncio.Transport | None:
    """The connection's transport under uvicorn, else None.

    ASGI gives an app no access to its connection. uvicorn's ``send`` is a method of
    its request cycle, which holds the transport: the hub uses it (and only it) to
    write bytes HTTP framing would not let it write, or to reset the connection."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    # Duck-typed: uvloop's transports implement asyncio's interface without subclassing it.
    if all(hasattr(transport, name) for name in ("write", "close", "abort", "is_closing", "get_extra_info")):
        return cast(asyncio.Transport, transport)
    return None


def http_bytes(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection after it."""
    framing = {b"content-length", b"connection", b"transfer-encoding"}
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in headers if name.lower() not in framing]
    lines += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def drip(transport: asyncio.Transport, data: bytes, interval: float, stop: Callable[[], bool]) -> None:
    """Write ``data`` one byte per ``interval`` s, then close: every read a client makes
    gets a byte well within any per-read timeout. ``stop()`` true ends it early."""
    for i in range(len(data)):
        if transport.is_closing() or stop():
            break
        transport.write(data[i : i + 1])
        await asyncio.sleep(interval)
    transport.close()
    await _let_server_see_the_close()


async def reset(transport: asyncio.Transport) -> None:
    """Close with a TCP RST (SO_LINGER 0): the client's next read fails with ECONNRESET."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await _let_server_see_the_close()


async def close(transport: asyncio.Transport) -> None:
    transport.close()
    await _let_server_see_the_close()


async def _let_server_see_the_close() -> None:
    # The server learns of the close in a callback on the next loop turns; returning
    # before it runs would make uvicorn try to answer a 500 on the closed connection.
    for _ in range(3):
        await asyncio.sleep(0)


__all__ = ["MODES", "TARGETS", "FaultSwitch", "Faults", "Mode", "Target"]
