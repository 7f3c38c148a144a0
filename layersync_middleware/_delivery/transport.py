"""Delivery to the hub: encoding, the HTTP request, and what a response means.

A transport takes a batch of events already encoded by the sender and returns one
:class:`Outcome` per event. The HTTP transports speak the server contract of
:mod:`._wire`; tests and users may plug in others (see :mod:`.testing`).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import email.utils
import gzip
import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import httpcore
import httpx

from .. import _wire
from .._event import Event
from .._settings import Settings

# ok: the hub took it. retry: try again later. drop: final, never retry. duplicate: another
# process of the fleet already sent this pair (see dedup_url): not sent, not an error.
Action = Literal["ok", "retry", "drop", "duplicate"]
RETRY_AFTER_CAP = 300.0  # a hub asking for an hour's pause gets five minutes


class Outcome(NamedTuple):
    action: Action
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


@runtime_checkable
class Transport(Protocol):
    """Sends a batch in the calling thread within ``timeout`` seconds in all (not per
    read). Must not raise; must return one outcome per event."""

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """The same for the asyncio sender; the sender also bounds each call by ``timeout``."""

    async def asend(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


class _ThreadedAsync:
    """An async face for a synchronous transport: it runs in a worker thread."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def asend(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        return await asyncio.to_thread(self._transport.send, events, bodies, timeout)

    async def aclose(self) -> None:
        return None


def threaded_async(transport: Transport) -> AsyncTransport:
    """``transport`` for the asyncio sender."""
    return _ThreadedAsync(transport)


def request_body(bodies: Sequence[bytes]) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, extra headers) for one event or a batch; gzip when it pays off."""
    if len(bodies) == 1:
        path, data = _wire.SERVER_EVENT_PATH, bodies[0]
    else:
        path, data = _wire.SERVER_BATCH_PATH, b'{"events":[' + b",".join(bodies) + b"]}"
    headers: dict[str, str] = {}
    if len(data) >= _wire.GZIP_MIN_BYTES:
        packed = gzip.compress(data, compresslevel=1, mtime=0)  # JSON: nearly level 6 size, half the CPU
        if len(packed) < len(data):
            data = packed
            headers["Content-Encoding"] = "gzip"
    return path, data, headers


def base_headers(settings: Settings) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        _wire.AUTH_HEADER: f"{_wire.AUTH_SCHEME} {settings.secret_key.reveal()}",
        _wire.SITE_ID_HEADER: str(settings.site_id),
        "User-Agent": _wire.USER_AGENT,
    }


# -- what a response means ---------------------------------------------------------------
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def classify(status: int, retry_after: str | None, body: bytes, events: Sequence[Event]) -> list[Outcome]:
    n = len(events)
    if 200 <= status < 300:
        if n > 1:
            per_event = _batch_results(body)
            if per_event is not None:
                return [_result_outcome(per_event.get(str(e.get("event_id"))), status) for e in events]
        return [Outcome("ok", status)] * n
    if status in _wire.RETRY_STATUSES or status >= 500:
        return [Outcome("retry", status, parse_retry_after(retry_after), f"HTTP {status}")] * n
    return [Outcome("drop", status, None, f"HTTP {status}")] * n


def _batch_results(body: bytes) -> dict[str, str] | None:
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        return None
    return {str(r["event_id"]): str(r.get("status")) for r in results if isinstance(r, dict) and "event_id" in r}


def _result_outcome(result: str | None, status: int) -> Outcome:
    if result == "retry":
        return Outcome("retry", status, None, "hub asked to retry")
    if result == "drop":
        return Outcome("drop", status, None, "hub dropped the event")
    return Outcome("ok", status)


def _network_error(exc: Exception, n: int) -> list[Outcome]:
    return [Outcome("retry", None, None, type(exc).__name__)] * n


# -- one deadline per request ---------------------------------------------------------------
# httpx's timeouts bound each read, so a hub that drips its answer a byte at a time
# would hold a request forever. The sync transport's connections go through this
# backend, which gives every connect, read and write at most the time left until the
# deadline of the request in progress on this thread.
class _Deadline(threading.local):
    at: float | None = None


def _bounded(deadline: _Deadline, timeout: float | None, error: type[Exception]) -> float | None:
    at = deadline.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        bounded = _bounded(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options), self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


# -- HTTP transports ----------------------------------------------------------------------
# The transports speak to httpcore, httpx's own connection layer, through its public API:
# the endpoint, the headers and the timeouts are built once per client, not per request
# (httpx's Client.post merges headers, parses the URL and runs its auth and event hooks for
# every call: about 40 % of a batch's CPU on loopback, bench/split.py). No redirect is ever
# followed (it would carry the key elsewhere) and no proxy is read from the environment.
_MAX_CONNECTIONS, _KEEPALIVE_CONNECTIONS, _KEEPALIVE_EXPIRY = 4, 2, 30.0
_NETWORK_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError)
_MAX_ANSWER = 1024 * 1024  # the hub answers a few bytes per event; more is not read


class _HTTPBase:
    """What the sync and async transports share: the endpoints, the headers, the limits."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.api_url
        self._timeout = settings.timeout
        parts = httpx.URL(settings.api_url)
        self._urls = {
            path: httpcore.URL(
                scheme=parts.raw_scheme,
                host=parts.raw_host,
                port=parts.port,
                target=parts.raw_path.rstrip(b"/") + path.encode(),
            )
            for path in (_wire.SERVER_EVENT_PATH, _wire.SERVER_BATCH_PATH)
        }
        host = b"[%s]" % parts.raw_host if b":" in parts.raw_host else parts.raw_host  # an IPv6 literal
        if parts.port is not None:
            host += b":%d" % parts.port
        self._headers = [
            (b"Host", host),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in base_headers(settings).items()),
        ]
        self._ssl = httpx.create_ssl_context() if parts.scheme == "https" else None

    def _request(
        self, bodies: Sequence[bytes], timeout: float
    ) -> tuple[httpcore.URL, list[tuple[bytes, bytes]], bytes, dict[str, Any]]:
        path, data, extra = request_body(bodies)
        headers = [*self._headers, (b"Content-Length", b"%d" % len(data))]
        if extra:
            headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        seconds = max(min(timeout, self._timeout), 0.001)
        limits = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        return self._urls[path], headers, data, {"timeout": limits}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self._url!r})"


def _answer(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, events: Sequence[Event]) -> list[Outcome]:
    retry_after = next((v.decode("latin-1") for k, v in headers if k.lower() == b"retry-after"), None)
    return classify(status, retry_after, body, events)


class HTTPTransport(_HTTPBase):
    """A keep-alive connection pool per process; retries a failed connect once, at once.
    Each ``send`` finishes within its ``timeout``, however slowly the hub answers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._deadline = _Deadline()
        # tests/delivery/test_transport.py proves a dripping hub cannot outlast the deadline.
        self._pool = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
            retries=1,  # a failed connect once more, at once
            network_backend=_DeadlineBackend(self._deadline),
        )
        self._closed = False

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        url, headers, data, extensions = self._request(bodies, timeout)
        self._deadline.at = time.monotonic() + extensions["timeout"]["read"]
        try:
            with self._pool.stream("POST", url, headers=headers, content=data, extensions=extensions) as resp:
                body = _read_bounded(resp.iter_stream())
                status, answer_headers = resp.status, resp.headers
        except _NETWORK_ERRORS as exc:
            return _network_error(exc, len(events))
        finally:
            self._deadline.at = None
        return _answer(status, answer_headers, body, events)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._pool.close()


def _read_bounded(chunks: Iterable[bytes]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > _MAX_ANSWER:
            break
    return bytes(out)


class AsyncHTTPTransport(_HTTPBase):
    """The same over httpcore's async pool, for the asyncio sender. Bound to one event loop."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl,
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
            retries=1,
        )
        self._closed = False

    async def asend(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        url, headers, data, extensions = self._request(bodies, timeout)
        try:
            resp = await asyncio.wait_for(
                self._pool.request("POST", url, headers=headers, content=data, extensions=extensions),
                extensions["timeout"]["read"],
            )
        except (*_NETWORK_ERRORS, asyncio.TimeoutError) as exc:
            return _network_error(exc, len(events))
        return _answer(resp.status, resp.headers, resp.content[:_MAX_ANSWER], events)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        self._closed = True
        await self._pool.aclose()
