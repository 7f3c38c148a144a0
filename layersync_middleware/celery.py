"""Delivery through Celery (``sender="celery"``): the broker holds the events, a worker sends them.

In the web process nothing changes on the request path: events go to the in-process
queue. The sender thread then hands each batch to the broker as one :data:`deliver`
task (on ``settings.celery_queue``) instead of calling the hub; an event counts as sent
(``stats().sent``) once the broker has it. A broker that cannot be reached answers
"retry" within the send timeout, and the events stay in the process (and its spool)
until a later hand-off works.

In a Celery worker, :data:`deliver` sends the batch to the hub with the same wire
format, batching, gzip and per-event outcomes as the in-process sender
(:class:`~layersync_middleware._transport.HTTPTransport`), with settings the worker reads
from its own ``LAYERSYNC_*`` environment: the secret key never travels in a message.
Events the hub did not take are retried through Celery, with exponential backoff and
jitter (at most :data:`RETRY_BACKOFF_MAX` seconds apart), until each event's maximum
age; the ones it took are not sent again. Event ids never change, so the hub
de-duplicates a batch that was delivered twice (``acks_late``: a worker lost mid-task
gives its message back to the queue).

Register the task on your Celery app by importing this module, and run a worker on the
queue::

    app = Celery("shop", include=["layersync_middleware.celery"])

    celery -A shop.celery_app worker -Q layersync

:func:`drain_on_celery_shutdown` (called once where the Celery app is made) delivers what
the worker's own tasks tracked before each worker process ends. See
``example_apps/celery_app.py`` and "Running a fleet" in the README.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from celery import current_app, shared_task  # type: ignore[import-untyped]
from celery.utils.time import get_exponential_backoff_interval  # type: ignore[import-untyped]

from . import _wire
from ._event import Event
from ._lifecycle import drain_on_celery_shutdown
from ._log import RateLimitedLog
from ._sender import DropReason, OnDrop, Stats
from ._settings import Settings, mask_url
from ._transport import HTTPTransport, Outcome, Transport, encode_event

__all__ = [
    "RETRY_BACKOFF_MAX",
    "TASK_NAME",
    "HandoffTransport",
    "deliver",
    "delivery_stats",
    "drain_on_celery_shutdown",
    "handoff_transport",
    "set_on_drop",
]

TASK_NAME = "layersync_middleware.celery.deliver"
# Retries are at most ten minutes apart. With the Redis broker a task waiting for its
# countdown is held by a worker, unacknowledged, and given to another worker once the
# broker's visibility timeout (an hour by default) passes: a longer countdown would
# run twice, and twice again.
RETRY_BACKOFF_MAX = 600
_BATCH_OVERHEAD = 16  # '{"events":[' + ']}' and commas, as the in-process sender counts
_log = RateLimitedLog()


# -- the web process: hand a batch to the broker ---------------------------------------------
def _broker_options(url: str, timeout: float) -> dict[str, Any]:
    """Transport options that make a publish fail within about ``timeout`` seconds
    when the broker is down or silent, instead of retrying for as long as kombu would."""
    scheme = url.partition("://")[0].partition("+")[0].lower()
    options: dict[str, Any] = {"max_retries": 0}  # one connection attempt: the sender retries later
    if scheme in ("redis", "rediss", "sentinel", "socket"):
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False)
    elif scheme in ("amqp", "amqps", "pyamqp"):
        # confirm_publish: "ok" only once the broker confirmed it has the message.
        options.update(read_timeout=timeout, write_timeout=timeout, confirm_publish=True)
    return options


class HandoffTransport:
    """One ``deliver`` task per batch on ``settings.celery_queue``. ``ok`` means the broker
    took it; a broker that is down or silent answers ``retry`` within the timeout.

    ``app`` is the Celery app whose broker to use; by default the current one (the app
    your web process imported, or Celery's default app, which reads ``CELERY_BROKER_URL``).
    """

    def __init__(self, settings: Settings, app: Any = None) -> None:
        self._queue = settings.celery_queue
        self._app = app
        # A publish is a connect and a command or two: each gets a third of the send timeout.
        self._op_timeout = max(settings.timeout / 3, 0.05)
        self._lock = threading.Lock()  # a kombu connection is for one thread at a time
        self._connection: Any = None
        self._producer: Any = None

    def _app_now(self) -> Any:
        return self._app if self._app is not None else current_app

    def _broker_url(self) -> str:
        """The broker's URL for a log line: its password masked."""
        try:
            conf = self._app_now().conf
            return mask_url(str(conf.broker_write_url or conf.broker_url or "?"))
        except Exception:
            return "?"

    def _producer_now(self) -> Any:
        if self._producer is None:
            app = self._app_now()
            url = app.conf.broker_write_url or app.conf.broker_url or ""
            options = _broker_options(str(url), self._op_timeout)
            self._connection = app.connection_for_write(connect_timeout=self._op_timeout, transport_options=options)
            self._producer = app.amqp.Producer(self._connection, auto_declare=True)
        return self._producer

    def _reset(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                pass

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        n = len(bodies)
        if not n:
            return []
        try:
            args = [[body.decode() for body in bodies], time.time()]
        except UnicodeDecodeError:
            return [Outcome("drop", None, None, "the encoded event is not UTF-8")] * n
        with self._lock:
            try:
                producer = self._producer_now()
                self._app_now().send_task(
                    TASK_NAME,
                    args=args,
                    queue=self._queue,
                    producer=producer,
                    retry=False,  # fail now: the sender keeps the events and tries again later
                    ignore_result=True,
                    add_to_parent=False,
                    # Monitoring tools (Flower, celery events) show this instead of the events.
                    argsrepr=f"[<{n} events>]",
                    kwargsrepr="{}",
                )
            except Exception as exc:
                self._reset()
                _log.warn(
                    "handoff",
                    "could not hand %d event(s) to the Celery broker at %s (%s): they stay queued, the hand-off is "
                    "retried. Is the worker's broker the web process's (CELERY_BROKER_URL, or your Celery app "
                    "imported at start-up)?",
                    n,
                    self._broker_url(),
                    type(exc).__name__,
                )
                return [Outcome("retry", None, None, f"Celery broker: {type(exc).__name__}")] * n
        return [Outcome("ok")] * n

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __repr__(self) -> str:
        return f"HandoffTransport(queue={self._queue!r})"


def handoff_transport(settings: Settings) -> Transport:
    """The transport of ``sender="celery"``: batches go to the broker as ``deliver`` tasks."""
    return HandoffTransport(settings)


# -- the worker: deliver to the hub ----------------------------------------------------------
class _Counters:
    """What this worker process's ``deliver`` tasks did; see :func:`delivery_stats`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.retried = self.batches = 0
        self.dropped: dict[str, int] = {}
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.latency: float | None = None


_counters = _Counters()
_on_drop: OnDrop | None = None
_worker: tuple[int, Settings, HTTPTransport] | None = None  # one per worker process


def set_on_drop(callback: OnDrop | None) -> None:
    """Call ``callback(event, reason)`` in the worker for each event the ``deliver`` task
    gives up on (``rejected``, ``expired``, ``invalid``). Set it where the worker imports
    your Celery app; it runs in the worker process, never in the web process."""
    global _on_drop
    _on_drop = callback


def delivery_stats() -> Stats:
    """What the ``deliver`` tasks of this worker process did: ``sent``, ``retried`` (events
    sent again later), ``dropped`` by reason, ``batches`` (hub requests)..."""
    c = _counters
    with c.lock:
        return Stats(
            sent=c.sent,
            retried=c.retried,
            dropped=dict(c.dropped),
            batches=c.batches,
            last_status=c.last_status,
            last_error=c.last_error,
            hub_latency_ms=c.latency,
        )


def _hub_transport() -> tuple[Settings, HTTPTransport]:
    """The worker process's settings, from its own environment (read once), and its
    transport (a forked child makes its own: the parent's connections are the parent's)."""
    global _worker
    worker = _worker
    if worker is None or worker[0] != os.getpid():
        settings = Settings.from_env()
        worker = _worker = (os.getpid(), settings, HTTPTransport(settings))
    return worker[1], worker[2]


def _decode(body: object) -> Event | None:
    if not isinstance(body, str):
        return None
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    if not isinstance(event.get("event_name"), str):
        return None
    return event


def _born(event: Event, handed_at: float) -> float:
    """When the event was built (its ``client_meta.queued_at_ms``), else when it was handed off."""
    meta = event.get("client_meta")
    queued_ms = meta.get("queued_at_ms") if isinstance(meta, dict) else None
    if isinstance(queued_ms, (int, float)) and not isinstance(queued_ms, bool) and 0 < queued_ms / 1000 <= handed_at:
        return float(queued_ms) / 1000
    return handed_at


def _attempts(event: Event) -> int:
    meta = event.get("client_meta")
    attempts = meta.get("attempts") if isinstance(meta, dict) else None
    return attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0


def _drop(event: Event, reason: DropReason, attempts: int, outcome: Outcome | None = None) -> None:
    with _counters.lock:
        _counters.dropped[reason] = _counters.dropped.get(reason, 0) + 1
    name = str(event.get("event_name", ""))
    detail = f" ({outcome.error})" if outcome is not None and outcome.error else ""
    level = logging.ERROR if name == "purchase" or reason == "rejected" else logging.WARNING
    _log.warn(
        f"drop:{reason}",
        "dropped a %s event (%s) after %d attempts: %s%s",
        name,
        event.get("event_id"),
        attempts,
        reason,
        detail,
        level=level,
    )
    if outcome is not None and outcome.status in (401, 403):
        _log.warn(
            "auth",
            "the hub refused the worker's secret key (HTTP %s); check LAYERSYNC_SECRET and LAYERSYNC_SITE_ID "
            "in the Celery worker's environment",
            outcome.status,
            level=logging.ERROR,
        )
    callback = _on_drop
    if callback is not None:
        try:
            callback(event, reason)
        except Exception:  # user code must not fail the task: the other events are fine
            _log.warn("on_drop", "on_drop raised", level=logging.ERROR)


def _chunks(events: list[Event], bodies: list[bytes]) -> Iterator[tuple[list[Event], list[bytes]]]:
    """The hub's batch limits (count and bytes), as the in-process sender keeps them."""
    start, size = 0, _BATCH_OVERHEAD
    for i, body in enumerate(bodies):
        full = i - start >= _wire.BATCH_MAX_EVENTS or size + len(body) + 1 > _wire.BATCH_MAX_BYTES
        if i > start and full:
            yield events[start:i], bodies[start:i]
            start, size = i, _BATCH_OVERHEAD
        size += len(body) + 1
    if start < len(bodies):
        yield events[start:], bodies[start:]


def _send(transport: Transport, events: list[Event], bodies: list[bytes], timeout: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for chunk_events, chunk_bodies in _chunks(events, bodies):
        started = time.monotonic()
        try:
            got = transport.send(chunk_events, chunk_bodies, timeout)
        except Exception as exc:  # a transport must not raise; if one does, the chunk waits
            got = []
            error = type(exc).__name__
        else:
            error = "the transport returned the wrong number of outcomes"
        if len(got) != len(chunk_events):
            got = [Outcome("retry", None, None, error)] * len(chunk_events)
        with _counters.lock:
            _counters.batches += 1
            _counters.latency = (time.monotonic() - started) * 1000
            _counters.last_status = got[0].status
            errors = [o.error for o in got if o.action != "ok" and o.error]
            if errors:
                _counters.last_error = errors[-1]
        outcomes.extend(got)
    return outcomes


class HubUnavailable(Exception):
    """Why a ``deliver`` task is retried (shown in the worker's log: no event data)."""


def _deliver(task: Any, bodies: object, handed_at: object = None) -> None:
    """The ``deliver`` task: ``bodies`` are the encoded events (JSON text), ``handed_at``
    when the web process handed them off (unix seconds)."""
    now = time.time()
    since = float(handed_at) if isinstance(handed_at, (int, float)) and not isinstance(handed_at, bool) else now
    events: list[Event] = []
    encoded: list[bytes] = []
    for body in bodies if isinstance(bodies, list) else []:
        event = _decode(body)
        if event is None:  # not ours, or corrupted: nothing to deliver or to show
            _drop({"event_name": "undecodable", "event_id": None}, "invalid", 0)
            continue
        max_age, _ = _wire.retry_policy(event["event_name"])
        if now - _born(event, since) > max_age:  # waited in the queue (a worker down) past its age
            _drop(event, "expired", _attempts(event))
            continue
        events.append(event)
        encoded.append(str(body).encode())  # the bytes the web process encoded, as they were
    if not events:
        return
    settings, transport = _hub_transport()  # a missing setting raises: the task is retried (autoretry)
    outcomes = _send(transport, events, encoded, settings.timeout)
    failing: list[tuple[Event, Outcome]] = []
    for event, outcome in zip(events, outcomes):
        if outcome.action == "ok":
            with _counters.lock:
                _counters.sent += 1
        elif outcome.action == "drop":
            _drop(event, "rejected", _attempts(event) + 1, outcome)
        elif outcome.action == "retry":
            failing.append((event, outcome))
        # "duplicate" does not come from HTTP: another process sent it, nothing to do
    if not failing:
        return
    countdown = max(
        1,
        get_exponential_backoff_interval(
            factor=1, retries=task.request.retries, maximum=RETRY_BACKOFF_MAX, full_jitter=True
        ),
    )
    retry_after = max((o.retry_after or 0.0 for _, o in failing), default=0.0)
    countdown = max(countdown, min(math.ceil(retry_after), RETRY_BACKOFF_MAX))
    again: list[str] = []
    for event, outcome in failing:
        attempts = _attempts(event) + 1
        max_age, _ = _wire.retry_policy(event["event_name"])
        if now - _born(event, since) + countdown > max_age:
            _drop(event, "expired", attempts, outcome)
            continue
        meta = event.get("client_meta")
        if isinstance(meta, dict):  # the hub sees how many tries an event took; its id stays
            meta["attempts"] = attempts
        again.append(encode_event(event).decode())
    if not again:
        return
    with _counters.lock:
        _counters.retried += len(again)
    errors = sorted({o.error or "retry" for _, o in failing})
    raise task.retry(
        args=[again, since],
        countdown=countdown,
        exc=HubUnavailable(f"{len(again)} event(s) not taken: {', '.join(errors)}"),
        argsrepr=f"[<{len(again)} events>]",
        kwargsrepr="{}",
    )


#: The Celery task that delivers a batch to the hub. A ``shared_task``: every Celery app
#: that imports this module (``include=["layersync_middleware.celery"]``) has it.
deliver: Any = shared_task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,  # acknowledged once delivered (or given up): a lost worker loses nothing
    reject_on_worker_lost=True,  # a child killed mid-task puts the message back on the queue
    ignore_result=True,
    max_retries=None,  # bounded by each event's maximum age instead
    # An unexpected error (a missing LAYERSYNC_* setting in the worker, a bug) retries the
    # whole batch with the same backoff; the maximum age still applies on every run.
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
)(_deliver)
