"""Delivery through Celery (``sender="celery"``): the broker holds the events, a worker sends them.

**The web process.** Nothing changes on the request path: events go to the in-process
queue. The sender thread hands each batch to the broker as one :data:`deliver` task,
published with *your* Celery app, found when the client is made (:func:`find_app`):
the app named by the ``celery_app`` setting (``"proj.celery:app"``), else the app made on
that thread or set as default (Django's fixup does this), else the one app in the
process. Celery's fallback app (``amqp://guest@localhost``) is never used: with no app
and no ``CELERY_BROKER_URL``, creating the client fails and names the setting. The
task goes where Celery routes it (``task_routes``, else the app's default queue, which
``celery -A proj worker`` consumes) unless ``celery_queue`` names a queue. An event the
broker took counts as ``stats().handed_off``; what the workers did is in
:func:`worker_stats` (Redis brokers) and in the workers' logs.

**The worker.** :data:`deliver` runs the in-process sender's own rules
(:class:`~layersync_middleware._delivery.core.Sender`: batches by count and bytes, what each hub
answer means, backoff with jitter, expiry by each event's maximum age, attempts, drops
and their counters) for one attempt per event, then hands the events still owed to
Celery as a retry, due when their backoff ends. Its settings are the web process's
sources: Django's ``LAYERSYNC``, Flask's config (in an app context), the environment.
The secret key never travels; its fingerprint does, and a worker whose key differs,
whose settings are missing, or whose key the hub refuses (401/403) delivers nothing and
loses nothing: the events wait in the broker for a worker that can, and it says so at
WARNING (the web process too, through Redis).

The message body is the events compressed and base64-encoded: a worker that does not
know the task (Celery logs the whole body as it discards it) shows no IP, user agent
or URL. Register the task wherever your app finds tasks: ``include=[
"layersync_middleware.celery"]``, an import, or, in Django,
``"layersync_middleware.django"`` in ``INSTALLED_APPS`` with ``autodiscover_tasks()``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task  # type: ignore[import-untyped]

from ._delivery.core import OnDrop, Restored, Sender, Stats
from ._delivery.handoff import (  # the web side; re-exported: the public names of sender="celery"
    _AUTH_STATUSES,
    CONFIG_WAIT_MAX,
    PROBE_COMMAND,
    RETRY_BACKOFF_MAX,
    TASK_NAME,
    HandoffTransport,
    _broker_url,
    _log,
    _note,
    env_override,
    find_app,
    handoff_transport,
    key_fingerprint,
    pack,
    queue_name,
    unpack,
    worker_stats,
)
from ._delivery.lifecycle import drain_on_celery_shutdown
from ._delivery.transport import HTTPTransport, Outcome, Transport
from ._event import Event, build_event, encode_event, new_event_id
from ._log import logger
from ._settings import ConfigurationError, Settings

__all__ = [
    "RETRY_BACKOFF_MAX",
    "TASK_NAME",
    "HandoffTransport",
    "deliver",
    "delivery_stats",
    "drain_on_celery_shutdown",
    "env_override",
    "find_app",
    "handoff_transport",
    "key_fingerprint",
    "pack",
    "queue_name",
    "round_trip",
    "set_on_drop",
    "unpack",
    "worker_stats",
]


# -- the worker: deliver to the hub ----------------------------------------------------------
_totals = Stats()
_totals_lock = threading.Lock()
_on_drop: OnDrop | None = None
_worker: tuple[int, Settings, HTTPTransport] | None = None  # one per worker process


def set_on_drop(callback: OnDrop | None) -> None:
    """Call ``callback(event, reason)`` in the worker for each event the ``deliver`` task
    gives up on (``rejected``, ``expired``, ``retries_exhausted``, ``invalid``). Set it
    where the worker imports your Celery app; it runs in the worker process."""
    global _on_drop
    _on_drop = callback


def _call_on_drop(event: Event, reason: str) -> None:
    callback = _on_drop
    if callback is not None:
        callback(event, reason)


def delivery_stats() -> Stats:
    """What the ``deliver`` tasks of this worker process did (``sent`` means delivered)."""
    with _totals_lock:
        return _totals


def _add(stats: Stats) -> None:
    global _totals
    with _totals_lock:
        t = _totals
        dropped = dict(t.dropped)
        for reason, n in stats.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        _totals = Stats(
            sent=t.sent + stats.sent,
            retried=t.retried + stats.retried,
            duplicates=t.duplicates + stats.duplicates,
            dropped=dropped,
            batches=t.batches + stats.batches,
            last_status=stats.last_status if stats.batches else t.last_status,
            last_error=stats.last_error or t.last_error,
            hub_latency_ms=stats.hub_latency_ms if stats.hub_latency_ms is not None else t.hub_latency_ms,
        )


def _read_settings() -> Settings:
    """The worker's settings, from where the web process reads them."""
    if os.environ.get("DJANGO_SETTINGS_MODULE") and "django.conf" in sys.modules:
        from django.conf import settings as django_settings

        if django_settings.configured:
            from .django import conf

            return conf.read()[0]
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_app_context():
        from .flask import settings_from_config

        return settings_from_config(flask.current_app.config)
    return Settings.from_env()


def _hub_transport() -> tuple[Settings, HTTPTransport]:
    """The worker process's settings (read once; a missing one raises ConfigurationError)
    and its transport (a forked child makes its own)."""
    global _worker
    worker = _worker
    if worker is None or worker[0] != os.getpid():
        settings = _read_settings()
        if not settings.enabled:
            raise ConfigurationError("enabled", "is off in this worker")
        worker = _worker = (os.getpid(), settings, HTTPTransport(settings))
    return worker[1], worker[2]


def _mismatch(settings: Settings, meta: dict[str, Any]) -> str | None:
    """Why this worker must not deliver what the web process sent (None: it may)."""
    site_id = meta.get("site_id")
    if site_id is not None and str(site_id) != str(settings.site_id):
        return f"its site id ({settings.site_id}) is not the web process's ({site_id})"
    key = meta.get("key")
    mine = key_fingerprint(settings)
    if key is not None and key != mine:
        return (
            f"its secret key (fingerprint {mine}) is not the web process's (fingerprint {key}); "
            "give the worker the same LAYERSYNC_SECRET"
        )
    return None


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _born(event: Event, handed_at: float) -> float:
    """When the event was built (its ``client_meta.queued_at_ms``), else when it was handed off."""
    meta = event.get("client_meta")
    queued = _number(meta.get("queued_at_ms") if isinstance(meta, dict) else None, 0.0) / 1000
    return queued if 0 < queued <= handed_at else handed_at


def _attempts(event: Event) -> int:
    meta = event.get("client_meta")
    attempts = meta.get("attempts") if isinstance(meta, dict) else None
    return attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0


def _decode(body: bytes) -> Event | None:
    try:
        event = _loads(body)
    except ValueError:  # orjson.JSONDecodeError is one too
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    return event if isinstance(event.get("event_name"), str) else None


def _countdown_cap(app: Any) -> int:
    try:
        visibility = float(app.conf.broker_transport_options.get("visibility_timeout") or RETRY_BACKOFF_MAX * 2)
    except Exception:
        visibility = RETRY_BACKOFF_MAX * 2
    return max(1, min(RETRY_BACKOFF_MAX, int(visibility / 2)))


_loads: Callable[[bytes], Any] = json.loads
try:  # the [fast] extra
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - the tests run with orjson
    pass


class HubUnavailable(Exception):
    """Why a ``deliver`` task is retried (shown in the worker's log: no event data)."""


class _Owed:
    """Events the task still owes the hub, for its retry: body, last backoff, when due (wall clock)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.delays: list[float] = []
        self.due: list[float] = []

    def add(self, body: bytes, delay: float, due: float) -> None:
        self.bodies.append(body)
        self.delays.append(delay)
        self.due.append(due)


_locals: dict[tuple[Settings, int], Settings] = {}


def _local(settings: Settings, size: int) -> Settings:
    """The settings of a task's own Sender: it delivers inline (``ok`` means delivered), keeps
    no spool, and has room for the whole batch. Made once per batch size, not per task."""
    size = max(settings.max_queue_size, size)
    local = _locals.get((settings, size))
    if local is None:
        local = _locals[(settings, size)] = settings.replace(sender="sync", spool_path=None, max_queue_size=size)
    return local


def _attempt(
    settings: Settings, transport: Transport, entries: list[Restored], owed: _Owed
) -> tuple[str | None, Stats]:
    """One attempt at each event, by the in-process sender's rules; what is owed after it
    goes to ``owed``. Returns the hub's refusal of this worker's key (if it refused it)
    and what the attempt did."""
    sender = Sender(_local(settings, len(entries)), on_drop=_call_on_drop, log=logger)
    sender.restore(entries)
    sender.begin_flush()  # every event due now, for one attempt
    refused: str | None = None
    while refused is None:
        taken = sender.take(linger=0)
        sender.report_drops()
        if not isinstance(taken, list):
            break  # nothing left to try now
        batch = sender.prepare(taken)
        if not batch:
            continue
        started = time.monotonic()
        try:
            outcomes = transport.send([i.event for i in batch], [i.body or b"" for i in batch], settings.timeout)
        except Exception as exc:  # a transport must not raise; if one does, the batch waits
            outcomes = [Outcome("retry", None, None, type(exc).__name__)] * len(batch)
        status = next((o.status for o in outcomes if o.status in _AUTH_STATUSES), None)
        if status is not None:
            sender.abandon(batch)  # not the events' fault: no attempt counted, they wait
            refused = (
                f"the hub refused its secret key (HTTP {status}); check LAYERSYNC_SECRET and "
                "LAYERSYNC_SITE_ID where this worker reads its settings"
            )
        else:
            sender.record(batch, outcomes, time.monotonic() - started)
        sender.report_drops()
    clock, wall = time.monotonic(), time.time()
    for item in sender.queued_events():
        owed.add(encode_event(item.event), item.delay, wall + max(item.due - clock, 0.0))
    sender.end_flush()
    stats = sender.stats()
    _add(stats)
    return refused, stats


def _deliver(task: Any, payload: object, handed_at: object = None, meta: object = None) -> None:
    """The ``deliver`` task: ``payload`` the packed events, ``handed_at`` when the web
    process handed them off (unix seconds), ``meta`` its site id and key fingerprint,
    and, on a retry, each event's last backoff and when it is due."""
    now = time.time()
    since = _number(handed_at, now)
    info: dict[str, Any] = meta if isinstance(meta, dict) else {}
    delays, dues = info.get("delays") or [], info.get("due") or []
    owed = _Owed()
    entries: list[Restored] = []
    bodies = unpack(payload)
    for i, body in enumerate(bodies):
        delay = _number(delays[i] if i < len(delays) else None, 0.0)
        due = _number(dues[i] if i < len(dues) else None, 0.0)
        if due > now + 1.0:  # its backoff is longer than a Celery countdown may be: it waits again
            owed.add(body, delay, due)
            continue
        event = _decode(body)
        if event is None:  # not ours, or corrupted: nothing to deliver or to show
            _add(Stats(dropped={"invalid": 1}))
            _log.warn("invalid", "dropped an event the deliver task could not decode", level=logging.ERROR)
            _call_on_drop({"event_name": "undecodable", "event_id": None}, "invalid")
            continue
        entries.append(Restored(event, _attempts(event), now - _born(event, since), True, delay))
    app = task.app
    site_id = str(info.get("site_id", "?"))
    problem: str | None
    try:
        settings, transport = _hub_transport()
    except ConfigurationError as exc:
        problem = f"its LayerSync settings are incomplete ({exc})"
    else:
        problem = _mismatch(settings, info)
        if problem is None and entries:
            problem, stats = _attempt(settings, transport, entries, owed)
            counts = {"delivered": stats.sent, "retried": stats.retried}
            counts.update({f"dropped:{reason}": n for reason, n in stats.dropped.items()})
            _note(app, site_id, counts)
            if problem is not None:  # the hub refused the key: what is owed waits as it is
                payload, info = pack(owed.bodies), {**info, "delays": owed.delays, "due": owed.due}
    if problem is not None:
        waiting = len(unpack(payload))
        countdown = min(2 ** min(task.request.retries, 6), CONFIG_WAIT_MAX)
        _log.warn(
            "config",
            "this Celery worker cannot deliver LayerSync events: %s. %d event(s) wait in the broker for a worker "
            "that can (this one looks again in %d s).",
            problem,
            waiting,
            countdown,
        )
        _note(app, site_id, {"waited": waiting}, problem)
        raise task.retry(
            args=[payload, since, info],
            countdown=countdown,
            exc=HubUnavailable(f"{waiting} event(s) wait: this worker cannot deliver them"),
            argsrepr=f"[<{waiting} events>]",
            kwargsrepr="{}",
        )
    if not owed.bodies:
        return
    countdown = max(1, min(math.ceil(min(owed.due) - now), _countdown_cap(app)))
    raise task.retry(
        args=[pack(owed.bodies), since, {**info, "delays": owed.delays, "due": owed.due}],
        countdown=countdown,
        exc=HubUnavailable(f"{len(owed.bodies)} event(s) not taken yet"),
        argsrepr=f"[<{len(owed.bodies)} events>]",
        kwargsrepr="{}",
    )


#: The Celery task that delivers a batch to the hub. A ``shared_task``: every Celery app
#: that imports this module has it.
deliver: Any = shared_task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,  # acknowledged once delivered (or given up): a lost worker loses nothing
    reject_on_worker_lost=True,  # a child killed mid-task puts the message back on the queue
    ignore_result=True,
    max_retries=None,  # bounded by each event's maximum age instead
    # A bug of ours retries the whole batch with Celery's backoff; the maximum age still
    # applies on every run.
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
)(_deliver)


# -- the round trip: broker, worker, hub ----------------------------------------------------------
def _probe(
    state: Any, site_id: str | None = None, key: str | None = None, event: str | None = None, **_: Any
) -> dict[str, Any]:
    """In a worker: what it would do with the web process's events, and one test event sent."""
    reply: dict[str, Any] = {"registered": TASK_NAME in state.app.tasks}
    consumer = getattr(getattr(state, "consumer", None), "task_consumer", None)
    reply["queues"] = [q.name for q in getattr(consumer, "queues", [])]
    try:
        settings, transport = _hub_transport()
    except ConfigurationError as exc:
        reply["problem"] = f"its LayerSync settings are incomplete ({exc})"
        return reply
    problem = _mismatch(settings, {"site_id": site_id, "key": key})
    if problem is not None:
        reply["problem"] = problem
        return reply
    name = event or "test_event"
    built = build_event(
        site_id=settings.site_id,
        event_name=name,
        event_id=new_event_id(name),
        props={"test_event": True},
        user_data={},
        event_source_url=None,
    )
    started = time.monotonic()
    (outcome,) = transport.send([built], [encode_event(built)], settings.timeout)
    reply.update(
        action=outcome.action,
        status=outcome.status,
        detail=outcome.error,
        event_id=built["event_id"],
        ms=round((time.monotonic() - started) * 1000),
        api_url=settings.api_url,
    )
    return reply


def _register_probe() -> None:
    from celery.worker.control import inspect_command  # type: ignore[import-untyped]

    inspect_command(name=PROBE_COMMAND, args=[("site_id", str), ("key", str), ("event", str)])(_probe)


_register_probe()


def round_trip(settings: Settings, event: str = "test_event", timeout: float = 3.0) -> tuple[bool, list[str]]:
    """From the web side: the broker, a worker on the queue with the task, its settings,
    and the hub, each hop said in a line. True when a worker delivered the test event."""
    try:
        app = find_app(settings)
    except ConfigurationError as exc:  # the command reads the environment: name its variable
        return False, [f"Celery app: {exc.renamed('LAYERSYNC_CELERY_APP')}"]
    lines = [f"Celery app {app.main!r}, broker {_broker_url(app)}"]
    override = env_override(app)
    if override:
        lines.append(f"warning: {override}")
    try:
        with app.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return False, [*lines, f"broker: unreachable ({type(exc).__name__}); is it running?"]
    lines.append("broker: reachable")
    queue = queue_name(app, settings)
    arguments = {"site_id": str(settings.site_id), "key": key_fingerprint(settings), "event": event}
    replies = app.control.broadcast(PROBE_COMMAND, arguments=arguments, reply=True, timeout=timeout) or []
    if not replies:
        return False, [*lines, f"worker: none answered within {timeout:g} s; start one: celery -A <your app> worker"]
    ok = False
    for reply in replies:
        for worker, answer in reply.items():
            ok = _say_worker(lines, worker, answer, queue) or ok
    return ok, lines


def _say_worker(lines: list[str], worker: str, answer: Any, queue: str) -> bool:
    if not isinstance(answer, dict) or "registered" not in answer:  # Celery's "no such command"
        lines.append(
            f"worker {worker}: does not know the LayerSync task; register it: include=['layersync_middleware.celery'] "
            "in Celery(...), or 'layersync_middleware.django' in INSTALLED_APPS with app.autodiscover_tasks()"
        )
        return False
    if not answer["registered"]:
        lines.append(f"worker {worker}: the task {TASK_NAME} is not registered on its app")
        return False
    if queue not in answer["queues"]:
        queues = ",".join([*answer["queues"], queue])
        lines.append(f"worker {worker}: does not consume the queue {queue!r}; start it with -Q {queues}")
        return False
    if "problem" in answer:
        lines.append(f"worker {worker}: cannot deliver: {answer['problem']}")
        return False
    status = answer.get("status")
    if answer.get("action") != "ok":
        said = f"HTTP {status}" if status else f"no answer ({answer.get('detail')})"
        lines.append(f"worker {worker}: the hub at {answer.get('api_url')} did not take the test event: {said}")
        return False
    lines.append(
        f"worker {worker}: delivered a test event to {answer.get('api_url')}: HTTP {status} in {answer.get('ms')} ms, "
        f"event_id {answer.get('event_id')}"
    )
    return True
