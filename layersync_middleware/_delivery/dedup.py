"""Fleet-wide pairing memory in Redis (``dedup_url``).

Each process remembers the pairs it sent, but the browser SDK re-sends a stale id for up
to 30 s, and two processes (two gunicorn workers, two pods) that each get one of those
requests would both forward it. With ``dedup_url`` the sender claims every
``(site, event_id, event_name)`` in Redis with ``SET NX EX`` before delivering a batch:
the first claimer sends, the others count a duplicate. The claims are made by the
sender thread, off the request path, in one pipelined round trip per batch.

A claim is the process's own token, so a batch this process retries finds its claims
still its own.

The key depends on where the id came from. The app's own events (``track()``,
``send()``) claim ``layersync:pair:<site>:<name>:<id>``. A paired event, whose id a
browser chose (:class:`~._event.HeaderEvent`), claims ``layersync:header:...`` and is
also a duplicate when the app's key is taken; it never takes the app's key. So a
forged header carrying a guessed id (``order_123``) cannot suppress, on any process of
the fleet, the purchase the app tracks later with that id.

A claim lives :data:`CLAIM_TTL` seconds: the SDK's re-send window with margin. An event
the hub rejects gives its claim back.

When Redis does not answer within :data:`REDIS_TIMEOUT`, the batch goes anyway: pairs are
then de-duplicated per process only (as without ``dedup_url``). That is logged once a
minute, counted (:func:`fallbacks`), and never reaches the app; Redis is asked again
after :data:`RETRY_AFTER` seconds.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._event import Event, HeaderEvent
from .._log import RateLimitedLog
from .._settings import Settings, mask_url
from .transport import Outcome, Transport

CLAIM_TTL = 120  # seconds: the browser SDK re-sends a stale id for up to 30 s
REDIS_TIMEOUT = 0.5  # each connect and each read; at most a quarter of the send timeout
RETRY_AFTER = 1.0  # after a failure, batches go without asking Redis for this long

# Gives a claim back only if it is still ours (another process may hold it by now).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

_fallbacks = 0
_fallbacks_lock = threading.Lock()
_log = RateLimitedLog()  # one for the process: its clients all say the same thing


def fallbacks() -> int:
    """Events this process sent without a fleet-wide claim because Redis failed."""
    return _fallbacks


def _count_fallbacks(n: int) -> None:
    global _fallbacks
    with _fallbacks_lock:
        _fallbacks += n


class ClaimingTransport:
    """Claims each event's pair in Redis, then sends the events it won with ``transport``;
    the others are ``Outcome("duplicate")``. Never raises."""

    def __init__(self, transport: Transport, settings: Settings, *, ttl: int = CLAIM_TTL) -> None:
        import redis  # the [redis] extra: imported only when dedup_url is set
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert settings.dedup_url is not None
        self._transport = transport
        self._url = settings.dedup_url
        self._ttl = ttl
        self._prefix = f"layersync:pair:{settings.site_id}:"
        self._header_prefix = f"layersync:header:{settings.site_id}:"
        timeout = min(REDIS_TIMEOUT, settings.timeout / 4)
        self._redis: Any = redis.Redis.from_url(
            self._url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # one try: a failure falls back at once, and says so
            health_check_interval=0,
        )
        self._release = self._redis.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._pid = -1
        self._token = b""
        self._down_until = 0.0
        self._down = False

    def _my_token(self) -> bytes:
        # One per process: a forked child must not take its parent's claims for its own.
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._token = os.getpid(), secrets.token_hex(12).encode()
            return self._token

    def _key(self, event: Event, prefix: str | None = None) -> str:
        """The key ``event`` claims (see the module docstring). The id goes last: it has
        no ':', so the key reads back unambiguously."""
        if prefix is None:
            prefix = self._header_prefix if isinstance(event, HeaderEvent) else self._prefix
        return f"{prefix}{event.get('event_name', '')}:{event.get('event_id', '')}"

    def _claim(self, events: Sequence[Event], token: bytes) -> list[bool] | None:
        """Which events this process may send; None when Redis failed (send them all)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            headers = [isinstance(event, HeaderEvent) for event in events]
            pipe = self._redis.pipeline(transaction=False)
            for event, from_header in zip(events, headers):
                key = self._key(event)
                pipe.set(key, token, nx=True, ex=self._ttl)
                pipe.get(key)  # ours: claimed now, or earlier by this process (a retry)
                if from_header:  # also a duplicate of the app's own claim on the pair
                    pipe.exists(self._key(event, self._prefix))
            replies = iter(pipe.execute())
        except Exception as exc:  # redis.RedisError, OSError, a bad reply: never into the app
            self._down_until = time.monotonic() + RETRY_AFTER
            self._down = True
            _log.warn(
                "dedup",
                "Redis at %s failed (%s): pairs are de-duplicated per process only until it answers",
                mask_url(self._url),
                type(exc).__name__,
            )
            return None
        if self._down:
            self._down = False
            _log.warn("dedup-up", "Redis at %s answers again", mask_url(self._url), level=logging.INFO)
        mine: list[bool] = []
        for from_header in headers:
            next(replies)  # SET NX: the GET after it says who holds the claim
            owner = next(replies)
            app_claimed = next(replies) if from_header else 0
            # A missing value (evicted under memory pressure) is nobody's claim: send.
            mine.append((owner is None or owner == token) and not app_claimed)
        return mine

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        started = time.monotonic()
        token = self._my_token()
        mine = self._claim(events, token)
        if mine is None:
            _count_fallbacks(len(events))
            return self._transport.send(events, bodies, timeout)
        picked = [i for i, ok in enumerate(mine) if ok]
        outcomes = [Outcome("duplicate")] * len(events)
        if not picked:
            return outcomes
        left = max(timeout - (time.monotonic() - started), 0.001)
        sent = self._transport.send([events[i] for i in picked], [bodies[i] for i in picked], left)
        if len(sent) != len(picked):  # a broken transport: try again later, keep the claims
            sent = [Outcome("retry", None, None, "transport returned the wrong number of outcomes")] * len(picked)
        for i, outcome in zip(picked, sent):
            outcomes[i] = outcome
        self._give_back([events[i] for i, o in zip(picked, sent) if o.action == "drop"], token)
        return outcomes

    def _give_back(self, events: Sequence[Event], token: bytes) -> None:
        """Release the claims of events that will never be sent (rare: the hub refused them)."""
        if not events or time.monotonic() < self._down_until:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for event in events:
                self._release(keys=[self._key(event)], args=[token], client=pipe)
            pipe.execute()
        except Exception:  # the claim expires on its own
            pass

    def close(self) -> None:
        try:
            self._transport.close()
        finally:
            try:
                self._redis.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"ClaimingTransport({self._transport!r}, dedup_url={mask_url(self._url)!r})"


def claiming_transport(transport: Transport, settings: Settings) -> Transport:
    """``transport`` behind fleet-wide claims in the Redis at ``settings.dedup_url``."""
    return ClaimingTransport(transport, settings)
