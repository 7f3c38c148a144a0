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
(:class:`~layersync_middleware._sender.Sender`: batches by count and bytes, what each hub
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

import base64
import hashlib
import hmac
import importlib
import json
import logging
import math
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from celery import shared_task  # type: ignore[import-untyped]

from ._event import Event, build_event, new_event_id
from ._lifecycle import drain_on_celery_shutdown
from ._log import RateLimitedLog, _handled, log_always, logger
from ._sender import OnDrop, Restored, Sender, Stats
from ._settings import ConfigurationError, Settings, mask_url
from ._transport import HTTPTransport, Outcome, Transport, encode_event

__all__ = [
    "RETRY_BACKOFF_MAX",
    "TASK_NAME",
    "HandoffTransport",
    "deliver",
    "delivery_stats",
    "drain_on_celery_shutdown",
    "find_app",
    "handoff_transport",
    "key_fingerprint",
    "round_trip",
    "set_on_drop",
    "worker_stats",
]

TASK_NAME = "layersync_middleware.celery.deliver"
PROBE_COMMAND = "layersync_probe"
# Retries are at most ten minutes apart, and at most half the Redis visibility timeout: a
# task waiting for its countdown is held by a worker, unacknowledged, and given to another
# worker once that timeout passes (a longer countdown would run twice). An event whose
# backoff is longer comes back early and waits again, unsent.
RETRY_BACKOFF_MAX = 600
# A misconfigured worker holds a message it put back for this long at most (the countdown):
# a worker that can deliver gets it soon after it starts.
CONFIG_WAIT_MAX = 3
WATCH_EVERY = 2.0  # the web process reads the workers' problems from Redis at most this often
_AUTH_STATUSES = (401, 403)


class _SeenLogger(logging.Logger):
    """``layersync``'s lines that must be seen even where the app configured no logging
    (a broker override, a worker that cannot deliver): to stderr then, as an exception."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        text = str(msg)
        if not _handled(logger, level):  # stderr, bare: say whose line it is and how grave
            text = f"[LayerSync] {logging.getLevelName(level)} {text}"
        log_always(logger, level, text, *args)


# Every line here is about events that may not arrive: seen even without logging set up.
_log = RateLimitedLog(_SeenLogger("layersync"))


# -- finding the user's Celery app -------------------------------------------------------------
def _is_fallback(app: Any) -> bool:
    """Celery's own ``default`` app, made when nothing else is current (amqp on localhost)."""
    return getattr(app, "main", None) == "default" and not getattr(app, "set_as_current", True)


def _import_app(path: str) -> Any:
    module, colon, attr = path.partition(":")
    if not colon:
        module, _, attr = path.rpartition(".")
    try:
        app = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError("celery_app", f"cannot import {path!r}: {exc}") from None
    if not callable(getattr(app, "send_task", None)):
        raise ConfigurationError("celery_app", f"{path!r} is not a Celery app")
    return app


def find_app(settings: Settings) -> Any:
    """The Celery app whose broker the hand-off publishes to. Call it on the thread that
    made the app (Celery's current app is per thread); see the module's docstring."""
    if settings.celery_app:
        return _import_app(settings.celery_app)
    from celery import _state

    for app in (_state._tls.current_app, _state.default_app):
        if app is not None and not _is_fallback(app):
            return app
    apps = [app for app in list(_state._apps) if not _is_fallback(app)]
    if len(apps) == 1:
        return apps[0]
    if apps:
        names = ", ".join(sorted(repr(app.main) for app in apps))
        raise ConfigurationError("celery_app", f"found several Celery apps ({names}): name the one to publish with")
    if os.environ.get("CELERY_BROKER_URL"):
        # No app in the process (a script, the CLI): one on CELERY_BROKER_URL, as Celery's own.
        from celery import Celery

        return Celery("layersync", set_as_current=False)
    raise ConfigurationError(
        "celery_app",
        "is not set and no Celery app was made before the LayerSync client: import yours first "
        "(from proj.celery import app) or name it, as in 'proj.celery:app'",
    )


_bound: dict[Settings, Any] = {}
_bound_lock = threading.Lock()


def bind_app(settings: Settings) -> Any:
    """Find the app now, on the thread making the client, for the sender thread to use;
    a missing one fails here, at start-up. Warns when ``CELERY_BROKER_URL`` overrides it."""
    app = find_app(settings)
    with _bound_lock:
        _bound[settings] = app
    warn_env_override(app)
    return app


def env_override(app: Any) -> str | None:
    """What to say when ``CELERY_BROKER_URL`` replaces the broker the app's code names."""
    env = os.environ.get("CELERY_BROKER_URL")
    try:
        coded = app.conf.first("broker_url", "broker_host")
    except Exception:
        return None
    if not env or not coded or str(coded) == env:
        return None
    return (
        f"CELERY_BROKER_URL ({mask_url(env)}) overrides the broker your Celery app {app.main!r} names "
        f"({mask_url(str(coded))}): Celery publishes there, and only workers that have the same "
        "CELERY_BROKER_URL receive the events"
    )


def warn_env_override(app: Any) -> None:
    problem = env_override(app)
    if problem:
        _log.warn("env-override", "%s", problem)


def _broker_url(app: Any) -> str:
    """The broker's URL for a log line, its password masked."""
    try:
        url = str(app.conf.broker_write_url or app.conf.broker_url or "")
    except Exception:
        url = ""
    return mask_url(url) if url else "(none: Celery's default, amqp://localhost)"


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


def queue_name(app: Any, settings: Settings) -> str:
    """The queue the tasks go to: ``celery_queue``, else where Celery routes the task."""
    if settings.celery_queue:
        return settings.celery_queue
    try:
        return str(app.amqp.router.route({}, TASK_NAME)["queue"].name)
    except Exception:
        return str(app.conf.task_default_queue)


# -- the message ---------------------------------------------------------------------------------
def key_fingerprint(settings: Settings) -> str:
    """Twelve hex digits that tell two secret keys apart and reveal nothing of either."""
    secret = settings.secret_key.reveal().encode()
    return hmac.new(secret, b"layersync key fingerprint " + str(settings.site_id).encode(), hashlib.sha256).hexdigest()[
        :12
    ]


def pack(bodies: Sequence[bytes]) -> str:
    """The encoded events as one opaque string: no log that prints a message shows their data."""
    return base64.b64encode(zlib.compress(b"\n".join(bodies), 1)).decode("ascii")


def unpack(payload: object) -> list[bytes]:
    if isinstance(payload, list):  # a message from before the packed format
        return [str(body).encode() for body in payload]
    try:
        data = zlib.decompress(base64.b64decode(str(payload), validate=True))
    except (ValueError, zlib.error):
        return []
    return data.split(b"\n") if data else []


# -- the web process: hand a batch to the broker ---------------------------------------------
class HandoffTransport:
    """One ``deliver`` task per batch. ``ok`` means the broker took it; a broker that is
    down or silent answers ``retry`` within the timeout."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        self._app = app if app is not None else find_app(settings)
        self._queue = settings.celery_queue or None  # None: Celery routes it
        self._meta = {"v": 2, "site_id": str(settings.site_id), "key": key_fingerprint(settings)}
        self._site_id = str(settings.site_id)
        # A publish is a connect and a command or two: each gets a third of the send timeout.
        self._op_timeout = max(settings.timeout / 3, 0.05)
        self._lock = threading.Lock()  # a kombu connection is for one thread at a time
        self._connection: Any = None
        self._producer: Any = None
        self._watched = 0.0
        self._seen_problem = time.time()  # problems from before this process are old news

    def _producer_now(self) -> Any:
        if self._producer is None:
            app = self._app
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
        with self._lock:
            try:
                self._app.send_task(
                    TASK_NAME,
                    args=[pack(bodies), time.time(), self._meta],
                    queue=self._queue,
                    producer=self._producer_now(),
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
                    "retried. Is it running, and is it the broker of your Celery app %r?",
                    n,
                    _broker_url(self._app),
                    type(exc).__name__,
                    self._app.main,
                )
                return [Outcome("retry", None, None, f"Celery broker: {type(exc).__name__}")] * n
        self._watch_workers()
        return [Outcome("ok")] * n

    def _watch_workers(self) -> None:
        """Say in this process what the workers said in theirs: a problem they wrote to Redis."""
        now = time.monotonic()
        if now - self._watched < WATCH_EVERY:
            return
        self._watched = now
        stats = worker_stats(self._app, self._site_id)
        at = float(stats.get("problem_at") or 0)
        if at > self._seen_problem:
            self._seen_problem = at
            _log.warn(
                "worker-problem",
                "a Celery worker (%s) cannot deliver LayerSync events: %s. They wait in the broker for a worker "
                "that can.",
                stats.get("problem_worker", "?"),
                stats.get("problem", "?"),
            )

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __repr__(self) -> str:
        return f"HandoffTransport(app={self._app.main!r}, queue={self._queue!r})"


def handoff_transport(settings: Settings) -> Transport:
    """The transport of ``sender="celery"``: batches go to the broker as ``deliver`` tasks."""
    with _bound_lock:
        app = _bound.get(settings)
    return HandoffTransport(settings, app)


# -- what the workers did, in Redis --------------------------------------------------------------
def _stats_key(site_id: str) -> str:
    return f"layersync:celery:{site_id}"


_redis_clients: dict[tuple[int, str], Any] = {}


def _redis(app: Any) -> Any:
    """A client of the app's broker when it is Redis, else None."""
    try:
        url = str(app.conf.broker_url or "")
    except Exception:
        return None
    if url.partition("://")[0] not in ("redis", "rediss"):
        return None
    key = (os.getpid(), url)
    client = _redis_clients.get(key)
    if client is None:
        import redis

        client = _redis_clients[key] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return client


def worker_stats(app: Any, site_id: str) -> dict[str, Any]:
    """What every worker on ``app``'s Redis broker did for ``site_id``: ``delivered``,
    ``retried``, ``dropped:<reason>``, ``waited`` (events a misconfigured worker put
    back), and the last ``problem`` (with ``problem_at``, ``problem_worker``). Empty for
    other brokers, or when Redis cannot be read."""
    client = _redis(app)
    if client is None:
        return {}
    try:
        raw = client.hgetall(_stats_key(site_id))
    except Exception:
        return {}
    stats: dict[str, Any] = {}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        stats[name] = int(text) if text.isdigit() else text
    return stats


def _note(app: Any, site_id: str, counts: dict[str, int], problem: str | None = None) -> None:
    client = _redis(app)
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        key = _stats_key(site_id)
        for name, n in counts.items():
            if n:
                pipe.hincrby(key, name, n)
        if problem:
            pipe.hset(key, mapping={"problem": problem, "problem_at": repr(time.time()), "problem_worker": _hostname()})
        pipe.execute()
    except Exception:  # statistics must not fail a delivery
        _log.warn("stats", "could not write the worker's statistics to Redis", level=logging.INFO)


def _hostname() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


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
