"""The web process's side of ``sender="celery"``: the user's Celery app, the message, and the
transport that hands each batch to the broker (:class:`HandoffTransport`). The worker's
side, the ``deliver`` task, is :mod:`layersync_middleware.celery`; both read the workers'
counters in Redis from here.

Celery is imported only when an app is looked for: this module costs nothing to import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any

from .._event import Event
from .._log import RateLimitedLog, _handled, log_always, logger
from .._settings import ConfigurationError, Settings, mask_url
from .transport import Outcome, Transport

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
    from celery import _state  # type: ignore[import-untyped]

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
