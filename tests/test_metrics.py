"""layersync_middleware.metrics: the sender's figures in Prometheus and OpenTelemetry are
``stats()``, summed over the processes, while the hub fails part of the time."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from helpers import SITE, LiveHub, wait_for
from servers import free_port, stop, wait_until_serving

from layersync_middleware import ConfigurationError, DropReason, Event, LayerSync, Outcome, Settings, Stats
from layersync_middleware._delivery.metrics import Observer
from layersync_middleware.metrics import FAILED, STATUS_CLASSES, prometheus_name, render

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 48
Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- the setting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["prometheus", "otel"])
def test_a_missing_extra_is_named_with_the_setting_as_spelled(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.split(".")[0] in ("prometheus_client", "opentelemetry") else real(name, *a),
    )
    env = {"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_METRICS": kind}
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(f"LAYERSYNC_METRICS: is {kind}, but ")
    assert f"[{kind}]" in str(raised.value)
    from layersync_middleware.django import conf

    monkeypatch.setattr(conf, "raw", lambda: {"site_id": "s", "secret_key": "sk_x", "metrics": kind})
    with pytest.raises(ConfigurationError) as raised:
        conf.read()
    assert raised.value.setting == "LAYERSYNC['metrics']"


def test_flask_names_the_setting_as_its_config_key() -> None:
    from flask import Flask

    from layersync_middleware.flask import settings_from_config

    app = Flask(__name__)
    app.config.update(LAYERSYNC_SITE_ID="s", LAYERSYNC_SECRET="sk_x", LAYERSYNC_METRICS="statsd")
    with pytest.raises(ConfigurationError) as raised:
        settings_from_config(app.config, environ={})
    assert raised.value.setting == 'app.config["LAYERSYNC_METRICS"]'


def test_the_setting_takes_prometheus_otel_or_off() -> None:
    base = {"site_id": "s", "secret_key": "sk_x"}
    assert Settings(**base).metrics is None
    assert Settings(**base, metrics="Prometheus").metrics == "prometheus"
    assert (
        Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_METRICS": "off"}).metrics
        is None
    )
    with pytest.raises(
        ConfigurationError, match=r"^LAYERSYNC_METRICS: must be prometheus or otel \(or off\), got 'statsd'"
    ):
        Settings.from_env({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_METRICS": "statsd"})


def test_without_the_setting_nothing_is_imported() -> None:
    code = (
        "import sys; from layersync_middleware import LayerSync\n"
        "ls = LayerSync(site_id='s', secret_key='sk_x', sender='sync', transport=None)\n"
        "names = ('prometheus_client', 'opentelemetry', 'layersync_middleware.metrics',\n"
        "         'layersync_middleware._delivery.metrics')\n"
        "print(sorted(m for m in sys.modules if m.startswith(names)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


# -- what a scrape must say --------------------------------------------------------------------------
def total(stats: list[Stats]) -> dict[str, Any]:
    """The workers' stats() summed, as the metrics must show them."""
    dropped = {reason: sum(s.dropped.get(reason, 0) for s in stats) for reason in get_args(DropReason)}
    return {
        "enqueued": sum(s.enqueued for s in stats),
        "sent": sum(s.sent for s in stats),
        "retried": sum(s.retried for s in stats),
        "duplicates": sum(s.duplicates for s in stats),
        "batches": sum(s.batches for s in stats),
        "queued": sum(s.queued for s in stats),
        "dropped": dropped,
        "failed": sum(dropped[r] for r in FAILED),
    }


def scraped(figures: Figures, capacity: float | None = None) -> dict[str, Any]:
    """The same figures read from a scrape (Prometheus names)."""

    def get(name: str, **labels: str) -> float:
        return figures.get((name, tuple(sorted(labels.items()))), 0.0)

    def of(name: str, unit: str = "") -> str:
        return prometheus_name(name, unit)

    requests = {c: get(of("requests") + "_total", status_class=c) for c in STATUS_CLASSES}
    durations = sum(get(of("export.duration", "s") + "_count", outcome=o) for o in ("success", "failure"))
    return {
        "enqueued": get(of("events.enqueued") + "_total"),
        "sent": get(of("events.exported") + "_total", outcome="success"),
        "retried": get(of("retries") + "_total"),
        "duplicates": get(of("events.deduplicated") + "_total"),
        "batches": sum(requests.values()),
        "queued": get(of("queue.size")),
        "dropped": {r: get(of("events.dropped") + "_total", reason=r) for r in get_args(DropReason)},
        "failed": get(of("events.exported") + "_total", outcome="failure"),
        # and the histograms: one duration per request, one lag per event the hub took
        "_durations": durations,
        "_lags": get(of("delivery.lag", "s") + "_count"),
        "_5xx": requests["5xx"],
        "_capacity": get(of("queue.capacity")),
    }


def moved(before: Figures, after: Figures, name: str, **labels: str) -> float:
    """How much one series changed between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def parse(text: str) -> Figures:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def assert_agree(metrics: dict[str, Any], expected: dict[str, Any], capacity: int) -> None:
    extra = {k: metrics.pop(k) for k in list(metrics) if k.startswith("_")}
    assert metrics == expected
    assert extra == {
        "_durations": expected["batches"],
        "_lags": expected["sent"],
        "_5xx": extra["_5xx"],
        "_capacity": capacity,
    }
    # The run was what it claims: the hub failed part of the time, and every kind of figure moved.
    assert extra["_5xx"] > 0 and expected["retried"] > 0 and expected["sent"] > 0
    assert expected["dropped"]["invalid_header"] > 0 and expected["enqueued"] > 0


# -- real servers ----------------------------------------------------------------------------------
def paired(run: str, i: int) -> dict[str, str]:
    if i % 8 == 7:  # a malformed id: refused at the door and counted
        return {"X-LayerSync-Event-Id": "bad id!", "X-LayerSync-Event-Name": "add_to_cart"}
    n = i - 1 if i % 8 == 3 else i  # the browser re-sends a pair: forwarded once per process
    return {"X-LayerSync-Event-Id": f"atc_{run}{n:06d}", "X-LayerSync-Event-Name": "add_to_cart"}


@contextmanager
def server(args: list[str], env: dict[str, str], url: str) -> Iterator[None]:
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **env}
    proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = None
    try:
        wait_until_serving(url, proc, args[2])
        yield
    except AssertionError as exc:  # with what the server said (a sender error would be logged there)
        output = stop(proc)
        raise AssertionError(f"{exc}\n--- server output:\n{output[-3000:]}") from None
    finally:
        if output is None:
            stop(proc)


def app_env(hub: LiveHub) -> dict[str, str]:
    return {
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub.url,
        "LAYERSYNC_METRICS": "prometheus",
        "LAYERSYNC_TIMEOUT_MS": "1000",
    }


def exercise_and_compare(url: str, hub: LiveHub, workers: int) -> None:
    run = uuid.uuid4().hex[:8]
    hub.faults(mode="500", every=2)  # every other request fails: retries, parked events, 5xx
    try:
        with httpx.Client(base_url=url, timeout=10) as http, ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(lambda i: http.post("/api/cart/add", headers=paired(run, i)).status_code, range(REQUESTS))
            )
            assert codes == [200] * REQUESTS
        wait_for(lambda: hub.http.get("/api/hub/faults").json()["hits"] >= workers, "every worker's hub request")
    finally:
        hub.faults(mode=None)
    with httpx.Client(base_url=url, timeout=10) as http, ThreadPoolExecutor(4) as pool:
        latest: dict[int, Stats] = {}

        def settled() -> bool:
            # Each worker's last word, asked in bursts so that every worker answers some.
            for answer in pool.map(lambda _: http.get("/stats").json(), range(8)):
                latest[answer["pid"]] = Stats(**answer["stats"])
            return len(latest) == workers and all(s.queued == 0 for s in latest.values())

        wait_for(settled, "every worker's last word, its queue empty", timeout=20)
        # Every worker took part (four requests at a time keep both of gunicorn's busy).
        assert all(s.enqueued > 0 for s in latest.values()), latest
        expected = total(list(latest.values()))
        capacity = 10_000 * workers
        # The worker that last sent adds its changes just after its batch: a scrape may be a moment behind.
        wait_for(
            lambda: (
                {k: v for k, v in scraped(parse(http.get("/metrics").text)).items() if not k.startswith("_")}
                == expected
            ),
            "the scrape to catch up with stats()",
        )
        assert_agree(scraped(parse(http.get("/metrics").text)), expected, capacity)


def test_scrape_from_fastapi_under_uvicorn_equals_stats(hub: LiveHub) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "metrics_apps.fastapi_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with server(args, app_env(hub), url):
        exercise_and_compare(url, hub, workers=1)


# With --preload the client is made in the master and each worker's is reset by the fork.
@pytest.mark.parametrize("preload", [[], ["--preload"]], ids=["app-per-worker", "preload"])
def test_scrape_from_flask_under_gunicorn_with_two_workers_equals_the_sum_of_their_stats(
    hub: LiveHub, tmp_path: Path, preload: list[str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    conf = ROOT / "tests" / "metrics_apps" / "gunicorn_conf.py"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "metrics_apps.flask_app:app",
        "-w",
        "2",
        "-c",
        str(conf),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        *preload,
    ]
    with server(args, {**app_env(hub), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}, url):
        exercise_and_compare(url, hub, workers=2)


# -- in process ----------------------------------------------------------------------------------
def drive(ls: LayerSync, hub: LiveHub) -> None:
    """Events through a hub failing every other request, one refused."""
    hub.faults(mode="500", every=3)
    try:
        for i in range(30):
            ls.track("add_to_cart", {"n": i}, event_id=f"atc_{uuid.uuid4().hex}")
        ls.track("add_to_cart", event_id="no")  # refused: invalid
        ls.flush(5)
    finally:
        hub.faults(mode=None)
    ls.flush(10)


def test_prometheus_in_one_process_equals_stats(hub: LiveHub) -> None:
    before = parse(render()[0].decode())
    with LayerSync(
        site_id=SITE.site_id, secret_key=SITE.secret_key, api_url=hub.url, metrics="prometheus", timeout_ms=1000
    ) as ls:
        drive(ls, hub)
        stats = ls.stats()
        after = parse(render()[0].decode())
    delta = {key: value - before.get(key, 0.0) for key, value in after.items() if "_queue_" not in key[0]}
    expected = total([stats])
    got = scraped(delta)
    assert stats.retried > 0 and stats.dropped.get("invalid") == 1
    assert {k: v for k, v in got.items() if not k.startswith("_") and k != "queued"} == {
        k: v for k, v in expected.items() if k != "queued"
    }
    assert (got["_durations"], got["_lags"]) == (stats.batches, stats.sent)


def test_opentelemetry_in_memory_reader_reads_the_same_figures(hub: LiveHub) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    with LayerSync(
        site_id=SITE.site_id, secret_key=SITE.secret_key, api_url=hub.url, metrics="otel", timeout_ms=1000
    ) as ls:
        drive(ls, hub)
        stats = ls.stats()
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {
            metric.name: list(metric.data.data_points)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        units = {
            metric.name: metric.unit
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def value(name: str, **attributes: str) -> float:
        found = points.get(f"layersync.sender.{name}", [])
        return float(sum(p.value for p in found if dict(p.attributes) == attributes))

    def count(name: str) -> int:
        return sum(p.count for p in points[f"layersync.sender.{name}"])

    got = {
        "enqueued": value("events.enqueued"),
        "sent": value("events.exported", outcome="success"),
        "failed": value("events.exported", outcome="failure"),
        "retried": value("retries"),
        "duplicates": value("events.deduplicated"),
        "batches": sum(value("requests", status_class=c) for c in STATUS_CLASSES),
        "queued": value("queue.size"),
        "dropped": {r: value("events.dropped", reason=r) for r in get_args(DropReason)},
    }
    expected = total([stats])
    assert got == {k: v for k, v in expected.items() if k in got}
    assert value("requests", status_class="5xx") > 0 and stats.retried > 0 and stats.dropped["invalid"] == 1
    assert (count("export.duration"), count("delivery.lag")) == (stats.batches, stats.sent)
    assert value("queue.capacity") == 10_000
    assert units["layersync.sender.export.duration"] == "s" and units["layersync.sender.events.enqueued"] == "{event}"


def test_stats_counts_what_the_queue_accepted() -> None:
    from layersync_middleware.testing import MemoryTransport

    with LayerSync(site_id="s", secret_key="sk_x", sender="sync", transport=MemoryTransport()) as ls:
        ls.track("add_to_cart", event_id="atc_0123456789abcdef")
        ls.track("add_to_cart", event_id="atc_0123456789abcdef")  # a duplicate: not accepted again
        assert dataclasses.replace(ls.stats(), last_status=None, hub_latency_ms=None).enqueued == 1


def test_send_counts_each_attempt_as_a_request(hub: LiveHub) -> None:
    # send() delivers outside the queue: each attempt is a request, the event is exported once.
    before = parse(render()[0].decode())
    with LayerSync(
        site_id=SITE.site_id, secret_key=SITE.secret_key, api_url=hub.url, metrics="prometheus", max_retries=1
    ) as ls:
        hub.faults(mode="500", count=1)
        try:
            delivery = ls.send("purchase", {"order_id": "ORD-1"}, timeout=5)
        finally:
            hub.faults(mode=None)
        assert delivery.ok
        after = parse(render()[0].decode())

    def change(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    requests = "layersync_sender_requests_total"
    assert (change(requests, status_class="5xx"), change(requests, status_class="2xx")) == (1, 1)
    assert change("layersync_sender_events_exported_total", outcome="success") == 1
    assert change("layersync_sender_export_duration_seconds_count", outcome="failure") == 1


def test_a_forked_child_counts_its_own_events(hub: LiveHub) -> None:
    # Forked while a sync held the observer's lock (gunicorn --preload, Celery prefork):
    # the child counts its own events, from its own stats(), and does not hang on that lock.
    sent = ("layersync_sender_events_exported_total", (("outcome", "success"),))
    with LayerSync(site_id=SITE.site_id, secret_key=SITE.secret_key, api_url=hub.url, metrics="prometheus") as ls:
        ls.track("lead")
        assert ls.flush(5) == 0
        observer = ls._worker.sender._observer
        assert isinstance(observer, Observer)
        read, write = os.pipe()
        holding, release = threading.Event(), threading.Event()

        def sync_under_way() -> None:  # a thread the child will not have, holding the lock
            with observer._lock:
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=sync_under_way)
        thread.start()
        holding.wait(10)
        with warnings.catch_warnings():  # 3.12+: "multi-threaded, use of fork()": that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        release.set()
        thread.join()
        if pid == 0:
            try:
                at_fork = parse(render()[0].decode()).get(sent, 0.0)  # the parent's figures, copied
                ls.track("add_to_cart")
                left = ls.flush(5)
                counted = wait_for(
                    lambda: parse(render()[0].decode()).get(sent, 0.0) - at_fork == 1, "the child's count", timeout=5
                )
                os.write(write, f"{left} {ls.stats().sent} {counted}".encode())
            finally:
                os._exit(0)
        os.close(write)
        with open(read, "rb") as pipe:
            said = pipe.read().decode()
        os.waitpid(pid, 0)
    assert said == "0 1 True"


class Broker:
    """A transport without HTTP, as the Celery hand-off is: "ok" and no status."""

    def send(self, events: Sequence[Event], bodies: Sequence[bytes], timeout: float) -> list[Outcome]:
        return [Outcome("ok")] * len(events)

    def close(self) -> None:
        pass


def test_the_celery_hand_off_counts_as_handed_off_with_no_lag() -> None:
    # sender="celery": the broker took the event; when the hub does is the workers' to know.
    before = parse(render()[0].decode())
    with LayerSync(site_id="s", secret_key="sk_x", sender="celery", transport=Broker(), metrics="prometheus") as ls:
        ls.track("lead")
        assert ls.flush(5) == 0
        assert (ls.stats().handed_off, ls.stats().sent) == (1, 0)
        after = parse(render()[0].decode())

    def change(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert change("layersync_sender_events_exported_total", outcome="handed_off") == 1
    assert change("layersync_sender_events_exported_total", outcome="success") == 0
    assert change("layersync_sender_requests_total", status_class="ok") == 1
    assert change("layersync_sender_export_duration_seconds_count", outcome="success") == 1
    assert change("layersync_sender_delivery_lag_seconds_count") == 0
