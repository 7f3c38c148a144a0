"""The sender's figures as Prometheus or OpenTelemetry metrics (``metrics="prometheus"``
or ``"otel"``; extras ``[prometheus]`` and ``[otel]``).

The counters mirror :meth:`LayerSync.stats`: after each batch (and after an event is
refused at the door) the sender's observer adds what changed since it last looked, so a
scrape says what ``stats()`` says, summed over the processes. Only the request and the
histograms are noted per batch: under the sender's lock, one tuple with each acknowledged
event's lag; the instruments are touched outside it. With the setting off, none of this
module is imported. Nothing here opens a port: the app serves :func:`render` (or its own
OpenTelemetry exporter) on a route of its own.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory before the server starts and call :func:`child_exit` from gunicorn's
``child_exit`` hook; :func:`render` then sums the workers. That mode has no custom
collectors and no ``set_function``, so every instrument is a plain Counter, Gauge
(``livesum``) or Histogram.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, get_args

from .._version import __version__

if TYPE_CHECKING:
    from .core import Sender, Stats
    from .queue import Queued
    from .transport import Outcome

__all__ = ["child_exit", "registry", "render"]

Labels = tuple[str, ...]
Request = tuple[float | None, str | None, list[float]]  # a request's seconds, status class, events' lags

# name (OpenTelemetry, after "layersync.sender."), unit, label names, description. The
# Prometheus name is the same with "_" for "." and "layersync_sender_" in front; its
# counters end in _total and the seconds histograms in _seconds.
COUNTERS: dict[str, tuple[str, Labels, str]] = {
    "events.enqueued": ("{event}", (), "Events accepted into the sender's queue."),
    "events.dropped": ("{event}", ("reason",), "Events that will never reach the hub, by reason (see DropReason)."),
    "events.exported": (
        "{event}",
        ("outcome",),
        "Events at the end of their delivery: success (the hub took them), failure (rejected, retries "
        "exhausted, expired; also counted in events.dropped) or handed_off (sender=celery: the broker took them).",
    ),
    "events.deduplicated": (
        "{event}",
        (),
        "Events not sent again: their pair was already sent or in flight (fleet-wide with dedup_url).",
    ),
    "requests": (
        "{request}",
        ("status_class",),
        "Requests to the hub by status class: 2xx, 4xx, 429, 5xx, network (no answer), ok (the Celery broker took it).",
    ),
    "retries": ("{retry}", (), "Failed event deliveries scheduled for another attempt."),
}
GAUGES: dict[str, tuple[str, str]] = {
    "queue.size": ("{event}", "Events queued or in flight."),
    "queue.capacity": ("{event}", "max_queue_size of the senders (summed over clients and processes)."),
}
# OpenTelemetry's advisory buckets for request durations, and a lag scale from
# a lingering batch (50 ms) to an event retried for days.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, 604800.0)
HISTOGRAMS: dict[str, tuple[Labels, tuple[float, ...], str]] = {
    "export.duration": (("outcome",), DURATION_BUCKETS, "One observation per request to the hub, in seconds."),
    "delivery.lag": ((), LAG_BUCKETS, "From an event's event_time to the hub's acknowledgement, in seconds."),
}
STATUS_CLASSES = ("2xx", "4xx", "429", "5xx", "network", "ok")
FAILED = ("rejected", "retries_exhausted", "expired")  # final drops after an export was tried


def prometheus_name(name: str, unit: str) -> str:
    """``events.dropped`` -> ``layersync_sender_events_dropped`` (prometheus_client adds
    ``_total`` to counters); seconds get ``_seconds``."""
    return "layersync_sender_" + name.replace(".", "_") + ("_seconds" if unit == "s" else "")


def otel_name(name: str) -> str:
    return "layersync.sender." + name


def status_class(outcome: Outcome) -> str:
    """The label of a request by its answer: an HTTP status class, ``network`` (no answer),
    or ``ok`` (a transport without HTTP took it: the Celery hand-off)."""
    status = outcome.status
    if status is None:
        return "ok" if outcome.action == "ok" else "network"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class Backend(Protocol):
    def add(self, name: str, value: int, labels: Labels) -> None: ...
    def observe(self, name: str, value: float, labels: Labels) -> None: ...
    def gauges(self, size: int, capacity: int) -> None: ...


class Prometheus:
    """Plain instruments on prometheus_client's default registry (in multiprocess mode
    they write to ``PROMETHEUS_MULTIPROC_DIR``)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.counters = {
            name: Counter(prometheus_name(name, unit), doc, labels) for name, (unit, labels, doc) in COUNTERS.items()
        }
        self.histograms = {
            name: Histogram(prometheus_name(name, "s"), doc, labels, buckets=buckets)
            for name, (labels, buckets, doc) in HISTOGRAMS.items()
        }
        # livesum: a worker that exits stops counting (child_exit marks it dead).
        self.size, self.capacity = (
            Gauge(prometheus_name(name, unit), doc, multiprocess_mode="livesum") for name, (unit, doc) in GAUGES.items()
        )
        for name, value in _known_labels():  # every known series from the start: rate() needs a first sample
            self.counters[name].labels(value)
        for outcome in ("success", "failure"):
            self.histograms["export.duration"].labels(outcome)

    def add(self, name: str, value: int, labels: Labels) -> None:
        counter = self.counters[name]
        (counter.labels(*labels) if labels else counter).inc(value)

    def observe(self, name: str, value: float, labels: Labels) -> None:
        histogram = self.histograms[name]
        (histogram.labels(*labels) if labels else histogram).observe(value)

    def gauges(self, size: int, capacity: int) -> None:
        self.size.set(size)
        self.capacity.set(capacity)


class OpenTelemetry:
    """Instruments from the global MeterProvider (set up by the app; until it is, the
    API's proxies hold them). The queue is read when the reader collects."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter("layersync_middleware", __version__)
        self.counters = {
            name: meter.create_counter(otel_name(name), unit, doc) for name, (unit, _, doc) in COUNTERS.items()
        }
        self.histograms = {
            name: meter.create_histogram(otel_name(name), "s", doc, explicit_bucket_boundaries_advisory=buckets)
            for name, (_, buckets, doc) in HISTOGRAMS.items()
        }
        self.labels = {name: spec[1] for name, spec in COUNTERS.items()} | {
            name: spec[0] for name, spec in HISTOGRAMS.items()
        }
        (size_unit, size_doc), (capacity_unit, capacity_doc) = GAUGES.values()
        meter.create_observable_up_down_counter(otel_name("queue.size"), [self._size], size_unit, size_doc)
        meter.create_observable_up_down_counter(
            otel_name("queue.capacity"), [self._capacity], capacity_unit, capacity_doc
        )

    def _attributes(self, name: str, labels: Labels) -> dict[str, str]:
        return dict(zip(self.labels[name], labels))

    def add(self, name: str, value: int, labels: Labels) -> None:
        self.counters[name].add(value, self._attributes(name, labels))

    def observe(self, name: str, value: float, labels: Labels) -> None:
        self.histograms[name].record(value, self._attributes(name, labels))

    def gauges(self, size: int, capacity: int) -> None:
        pass  # observed at collection instead

    @staticmethod
    def _size(options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        yield Observation(sum(o._sender.stats().queued for o in _live("otel")))

    @staticmethod
    def _capacity(options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        yield Observation(sum(o.capacity for o in _live("otel")))


def _known_labels() -> Iterator[tuple[str, str]]:
    """(counter, label value) for every label value known in advance."""
    from .core import DropReason

    for reason in get_args(DropReason):
        yield "events.dropped", reason
    yield "events.exported", "success"
    yield "events.exported", "failure"
    yield "events.exported", "handed_off"
    for status in STATUS_CLASSES:
        yield "requests", status


_BACKENDS: dict[str, Backend] = {}
_BACKENDS_LOCK = threading.Lock()
_OBSERVERS: weakref.WeakSet[Observer] = weakref.WeakSet()


def backend(kind: str) -> Backend:
    """One set of instruments per process and kind (a registry refuses a name twice)."""
    with _BACKENDS_LOCK:
        found = _BACKENDS.get(kind)
        if found is None:
            found = _BACKENDS[kind] = Prometheus() if kind == "prometheus" else OpenTelemetry()
        return found


def _live(kind: str) -> list[Observer]:
    """This process's observers of one kind."""
    pid = os.getpid()
    return [o for o in list(_OBSERVERS) if o.pid == pid and o.kind == kind]


class Observer:
    """What one :class:`~._delivery.core.Sender` tells the metrics. ``batch`` and ``attempt``
    note a request; ``sync`` adds the counters' changes since the last look."""

    def __init__(self, sender: Sender, kind: str) -> None:
        self._sender = sender
        self.kind = kind
        self._backend = backend(kind)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, Labels], int] = {}
        self._requests: list[Request] = []
        self.capacity = sender.settings.max_queue_size
        self._handoff = sender.settings.sender == "celery"
        self.queued = 0
        self.pid = os.getpid()
        _OBSERVERS.add(self)

    def _check_fork(self) -> None:
        """Under the sender's lock: in a forked child the sender started afresh, and so
        do its figures (what the parent noted is the parent's)."""
        pid = os.getpid()
        if self.pid != pid:
            self.pid, self._seen, self._requests = pid, {}, []

    def batch(self, batch: Sequence[Queued], outcomes: Sequence[Outcome], latency: float | None) -> None:
        """Under the sender's lock, after a request: only remember it."""
        self._check_fork()
        now = time.time()
        lags = [
            now - item.event["event_time"]
            for item, outcome in zip(batch, outcomes)
            if outcome.action == "ok" and isinstance(item.event.get("event_time"), (int, float))
        ]
        if self._handoff:  # the broker took them: when the hub does is the Celery workers' to know
            lags = []
        self._requests.append((latency, _request_class(outcomes), lags))

    def attempt(self, outcome: Outcome, latency: float) -> None:
        """One attempt of ``send()`` (outside the queue), outside the sender's lock."""
        with self._sender.lock:
            self._check_fork()
            self._requests.append((latency, _request_class([outcome]), []))
        self.sync()

    def sync(self) -> None:
        """Outside the sender's lock: add what changed since the last call. One at a time
        (the sender thread after a batch, a request after a refusal): a sync that read
        older figures must not apply them after a newer one."""
        sender = self._sender
        with self._lock:
            stats = sender.stats()
            with sender.lock:
                self._check_fork()
                requests, self._requests = self._requests, []
            self._add(stats, requests)

    def _add(self, stats: Stats, requests: list[Request]) -> None:
        backend = self._backend
        failed = sum(stats.dropped.get(reason, 0) for reason in FAILED)
        totals: list[tuple[str, Labels, int]] = [
            ("events.enqueued", (), stats.enqueued),
            ("events.deduplicated", (), stats.duplicates),
            ("events.exported", ("success",), stats.sent),
            ("events.exported", ("handed_off",), stats.handed_off),
            ("events.exported", ("failure",), failed),
            ("retries", (), stats.retried),
            *(("events.dropped", (reason,), count) for reason, count in stats.dropped.items()),
        ]
        for name, labels, total in totals:
            key = (name, labels)
            change = total - self._seen.get(key, 0)
            self._seen[key] = total
            if change > 0:
                backend.add(name, change, labels)
        for latency, status, lags in requests:
            if status is None:  # every event a fleet-wide duplicate: no request was made
                continue
            backend.add("requests", 1, (status,))
            if latency is not None:
                backend.observe("export.duration", latency, ("success" if status in ("2xx", "ok") else "failure",))
            for lag in lags:
                backend.observe("delivery.lag", max(lag, 0.0), ())
        self.queued = stats.queued
        live = _live(self.kind)
        backend.gauges(sum(o.queued for o in live), sum(o.capacity for o in live))


def _after_fork_in_child() -> None:
    # A lock copied by fork may be held by a thread the child does not have (a sync under way).
    global _BACKENDS_LOCK
    _BACKENDS_LOCK = threading.Lock()
    for observer in list(_OBSERVERS):
        observer._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _request_class(outcomes: Sequence[Outcome]) -> str | None:
    for outcome in outcomes:
        if outcome.action != "duplicate":
            return status_class(outcome)
    return None


# -- serving /metrics -------------------------------------------------------------------------
def registry() -> Any:
    """The registry to expose: every worker's values under ``PROMETHEUS_MULTIPROC_DIR``,
    else this process's default registry."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    fresh = CollectorRegistry()
    multiprocess.MultiProcessCollector(fresh)  # type: ignore[no-untyped-call]
    return fresh


def render() -> tuple[bytes, str]:
    """The Prometheus exposition and its content type, for a ``/metrics`` route."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry()), CONTENT_TYPE_LATEST


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: a dead worker's gauges leave the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
