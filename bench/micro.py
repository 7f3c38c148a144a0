"""Sender and request-path micro-benchmarks, one per process; each prints one JSON line.

    python bench/micro.py track --transport discard|memory|http --n 100000 --sink URL
    python bench/micro.py segment-track --n 100000 --sink URL
    python bench/micro.py deliver --lib layersync|segment --n 200000 --sink URL
    python bench/micro.py memory --n 1000000 --sink URL     # RSS sampled while the sender delivers
    python bench/micro.py request-path --n 20000 --sink URL
    python bench/micro.py idle-memory --lib none|layersync|segment --sink URL

``bench/run.py`` runs them pinned to the server core, with the sink on the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from procstat import rss_kib

PROPS: dict[str, Any] = {
    "value": 10,
    "currency": "USD",
    "items": [{"item_id": "SKU-A", "name": "Widget", "quantity": 1, "price": 10}],
}
SITE_ID, SECRET = "site_bench", "sk_bench_0123456789"
MATCHER = ["/api/cart/*", "/api/checkout/*", "/api/orders/**"]
BLOCK = 500  # memory run: events tracked between looks at the queue
BACKLOG = 5_000  # memory run: the feeder waits while more than this many are queued
SAMPLE_EVERY = 0.1  # seconds between RSS samples
FLAT_MIB = 4  # "flat": peak and end within this many MiB of the steady state


class Discard:
    """A transport that answers ``ok`` and keeps nothing: the events die once sent. A
    ``MemoryTransport`` keeps every event alive, and the garbage collector's passes over that
    growing list would be what a timing of ``track()`` measures."""

    def send(self, events: Sequence[Any], bodies: Sequence[bytes], timeout: float) -> list[Any]:
        from layersync_middleware import Outcome

        return [Outcome("ok", 200)] * len(events)

    async def asend(self, events: Sequence[Any], bodies: Sequence[bytes], timeout: float) -> list[Any]:
        return self.send(events, bodies, timeout)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def layersync_client(sink: str, n: int, transport: str = "http") -> Any:
    """``transport``: "http" (to the sink), "discard" or "memory". A queue that holds the
    whole run: the calls measure track(), not the drop path."""
    from layersync_middleware import LayerSync
    from layersync_middleware.testing import MemoryTransport

    plugged = {"http": None, "discard": Discard(), "memory": MemoryTransport()}[transport]
    size = max(1000, min(n, 1_000_000))
    return LayerSync(
        site_id=SITE_ID, secret_key=SECRET, api_url=sink, matcher=MATCHER, max_queue_size=size, transport=plugged
    )


def segment_client(sink: str, n: int) -> Any:
    from segment.analytics import Client  # type: ignore[import-untyped]  # no types shipped

    # Segment's defaults (one consumer thread, batches of 100, gzip off) with its host on the sink.
    return Client(write_key="wk_bench", host=sink, max_queue_size=max(10_000, n))


def per_call_ns(call: Callable[[], object], n: int) -> list[int]:
    clock = time.perf_counter_ns
    times = [0] * n
    for i in range(n):
        start = clock()
        call()
        times[i] = clock() - start
    return times


def timing(call: Callable[[], object], n: int) -> dict[str, float]:
    """Median and p99 of ``n`` calls, less the timer's own cost (a no-op timed the same way)."""
    overhead = statistics.median(per_call_ns(lambda: None, min(n, 20_000)))
    times = sorted(per_call_ns(call, n))
    return {
        "median_us": (times[n // 2] - overhead) / 1000,
        "p99_us": (times[int(n * 0.99)] - overhead) / 1000,
        "timer_overhead_ns": overhead,
        "calls": n,
    }


def cmd_track(args: argparse.Namespace) -> dict[str, Any]:
    client = layersync_client(args.sink, args.n, args.transport)
    client.track("add_to_cart", PROPS)  # the worker and the HTTP client start here, not in the timing
    client.flush(30)
    result = timing(lambda: client.track("add_to_cart", PROPS), args.n)
    client.flush(120)
    stats = client.stats()
    client.shutdown(5)
    return {**result, "sent": stats.sent, "dropped": sum(stats.dropped.values())}


def cmd_segment_track(args: argparse.Namespace) -> dict[str, Any]:
    client = segment_client(args.sink, args.n)
    client.track(user_id="user-1", event="add_to_cart", properties=PROPS)
    client.flush()
    result = timing(lambda: client.track(user_id="user-1", event="add_to_cart", properties=PROPS), args.n)
    client.shutdown()
    return result


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def cmd_deliver(args: argparse.Namespace) -> dict[str, Any]:
    """Track ``n`` events as fast as possible and wait until the sink has them all."""
    if args.lib == "layersync":
        client = layersync_client(args.sink, args.n)
        track: Callable[[], object] = lambda: client.track("add_to_cart", PROPS)  # noqa: E731
        flush: Callable[[], object] = lambda: client.flush(300)  # noqa: E731
    else:
        client = segment_client(args.sink, args.n)
        track = lambda: client.track(user_id="user-1", event="add_to_cart", properties=PROPS)  # noqa: E731
        flush = client.flush
    track()  # warm: threads and connections up before the clock starts
    flush()
    rss_before = rss_kib(os.getpid())
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for _ in range(args.n):
        track()
    flush()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {
        "events": args.n + 1,  # with the warm-up event
        "seconds": elapsed,
        "events_per_s": args.n / elapsed,
        "cpu_us_per_event": cpu / args.n * 1e6,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_kib(os.getpid()),
    }


def cmd_memory(args: argparse.Namespace) -> dict[str, Any]:
    """The sender delivers ``n`` events to the sink, default settings, while RSS is sampled.

    Events are tracked in blocks of ``BLOCK``; the feeder sleeps while more than ``BACKLOG``
    (at most half the queue's bound) wait in the queue, so the run goes at the rate the
    sender sustains and the queue never drops: what RSS shows is the sender's own footprint over time, not a
    queue filling up. Steady state is the median of the samples after the first tenth of the
    events (connections, caches and the queue at their working size); flat means neither the
    peak nor the end is more than ``FLAT_MIB`` above it."""
    from layersync_middleware import LayerSync

    client = LayerSync(site_id=SITE_ID, secret_key=SECRET, api_url=args.sink, matcher=MATCHER)
    backlog = min(BACKLOG, client.settings.max_queue_size // 2)  # well inside the queue: nothing dropped
    track = client.track
    track("add_to_cart", PROPS)  # warm: the worker and the connection up before the clock starts
    client.flush(30)
    pid = os.getpid()
    rss_start = rss_kib(pid)
    samples: list[tuple[float, int, int]] = []  # (seconds, events tracked, RSS KiB)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    last = t0
    for done in range(0, args.n, BLOCK):
        for _ in range(min(BLOCK, args.n - done)):
            track("add_to_cart", PROPS)
        while client.stats().queued > backlog:
            time.sleep(0.001)
        now = time.perf_counter()
        if now - last >= SAMPLE_EVERY:
            samples.append((now - t0, done + BLOCK, rss_kib(pid)))
            last = now
    client.flush(300)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    rss_end = rss_kib(pid)
    samples.append((elapsed, args.n, rss_end))
    settled = [rss for _, tracked, rss in samples if tracked >= args.n // 10] or [rss_end]
    steady = int(statistics.median(settled))
    peak = max(rss for _, _, rss in samples)
    stats = client.stats()
    return {
        "events": args.n + 1,  # with the warm-up event
        "sent": stats.sent,
        "dropped": sum(stats.dropped.values()),
        "seconds": elapsed,
        "events_per_s": args.n / elapsed,
        "cpu_us_per_event": cpu / args.n * 1e6,
        "rss_start_kib": rss_start,
        "rss_steady_kib": steady,
        "rss_peak_kib": peak,
        "rss_end_kib": rss_end,
        "peak_over_steady_mib": (peak - steady) / 1024,
        "end_over_steady_mib": (rss_end - steady) / 1024,
        "flat": max(peak, rss_end) - steady <= FLAT_MIB * 1024,
        "flat_mib": FLAT_MIB,
        "samples": samples,
    }


# -- the request path, in-process ------------------------------------------------------------
def asgi_scope(path: str, event_id: str | None) -> dict[str, Any]:
    headers = [
        (b"host", b"shop.example"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        (b"cookie", b"_fbp=fb.1.1700000000000.42; _ga=GA1.1.42.1700000000"),
        (b"referer", b"https://shop.example/products/sku-a"),
        (b"content-type", b"application/json"),
    ]
    if event_id is not None:
        headers += [(b"x-layersync-event-id", event_id.encode()), (b"x-layersync-event-name", b"add_to_cart")]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "https",
        "query_string": b"",
        "headers": headers,
        "client": ("10.0.0.2", 1234),
        "server": ("shop.example", 443),
    }


def thread_cpu_per_request(app: Any, scopes: list[dict[str, Any]]) -> float:
    """CPU µs per request of this thread only: the sender's worker thread is not counted."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"sku":"SKU-A","quantity":1}', "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def run() -> float:
        start = time.thread_time_ns()
        for scope in scopes:
            await app(scope, receive, send)
        return (time.thread_time_ns() - start) / len(scopes) / 1000

    return asyncio.run(run())


def wsgi_environ(path: str, event_id: str | None) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "shop.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.2",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "0",
        "HTTP_HOST": "shop.example",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        "HTTP_COOKIE": "_fbp=fb.1.1700000000000.42; _ga=GA1.1.42.1700000000",
        "HTTP_REFERER": "https://shop.example/products/sku-a",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if event_id is not None:
        environ["HTTP_X_LAYERSYNC_EVENT_ID"] = event_id
        environ["HTTP_X_LAYERSYNC_EVENT_NAME"] = "add_to_cart"
    return environ


def wsgi_thread_cpu_per_request(app: Any, environs: list[dict[str, Any]]) -> float:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        pass

    start = time.thread_time_ns()
    for environ in environs:
        body = app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.thread_time_ns() - start) / len(environs) / 1000


def cmd_request_path(args: argparse.Namespace) -> dict[str, Any]:
    from apps import flask_app, starlette_app
    from reference import ReferenceLayer, Shipper
    from starlette.middleware import Middleware

    from layersync_middleware import LayerSyncMiddleware, LayerSyncWSGIMiddleware

    client = layersync_client(args.sink, args.n * (args.repeat + 1) * 3, "discard")
    bare = starlette_app()
    ours = starlette_app([Middleware(LayerSyncMiddleware, client=client)])
    reference = starlette_app([Middleware(ReferenceLayer, shipper=Shipper(args.sink, SECRET, SITE_ID))])
    counter = iter(range(10**9))

    def scopes(path: str, paired: bool) -> list[dict[str, Any]]:
        return [asgi_scope(path, f"atc_{next(counter):016x}" if paired else None) for _ in range(args.n)]

    flask_bare = flask_app().wsgi_app
    flask_ours = LayerSyncWSGIMiddleware(flask_app().wsgi_app, client=client)

    def environs(path: str, paired: bool) -> list[dict[str, Any]]:
        return [wsgi_environ(path, f"atc_{next(counter):016x}" if paired else None) for _ in range(args.n)]

    asgi, wsgi = thread_cpu_per_request, wsgi_thread_cpu_per_request
    cases: dict[str, Callable[[], float]] = {
        "bare": lambda: asgi(bare, scopes("/api/cart/add", True)),
        "unmatched": lambda: asgi(ours, scopes("/products/sku-a", False)),
        "matched_no_headers": lambda: asgi(ours, scopes("/api/cart/add", False)),
        "paired": lambda: asgi(ours, scopes("/api/cart/add", True)),
        "reference_paired": lambda: asgi(reference, scopes("/api/cart/add", True)),
        "wsgi_bare": lambda: wsgi(flask_bare, environs("/api/cart/add", True)),
        "wsgi_unmatched": lambda: wsgi(flask_ours, environs("/products/sku-a", False)),
        "wsgi_paired": lambda: wsgi(flask_ours, environs("/api/cart/add", True)),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(-1, args.repeat):  # cases interleaved; repeat -1 warms each one up
        for name, case in cases.items():
            per_request = case()
            if repeat >= 0:
                runs[name].append(per_request)
    client.shutdown(5)
    result: dict[str, Any] = {f"{name}_us": statistics.median(values) for name, values in runs.items()}
    result["paired_minus_unmatched_us"] = result["paired_us"] - result["unmatched_us"]
    result["unmatched_minus_bare_us"] = result["unmatched_us"] - result["bare_us"]
    result["wsgi_paired_minus_unmatched_us"] = result["wsgi_paired_us"] - result["wsgi_unmatched_us"]
    result["wsgi_unmatched_minus_bare_us"] = result["wsgi_unmatched_us"] - result["wsgi_bare_us"]
    result["requests_per_case"] = args.n * args.repeat
    return result


def cmd_idle_memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS of a process that made a client and delivered one event (threads and pools up)."""
    if args.lib == "layersync":
        client = layersync_client(args.sink, 1000)
        client.track("add_to_cart", PROPS)
        client.flush(30)
    elif args.lib == "segment":
        client = segment_client(args.sink, 10_000)
        client.track(user_id="user-1", event="add_to_cart", properties=PROPS)
        client.flush()
    time.sleep(0.2)
    return {"rss_kib": rss_kib(os.getpid())}


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "track": cmd_track,
    "segment-track": cmd_segment_track,
    "deliver": cmd_deliver,
    "memory": cmd_memory,
    "request-path": cmd_request_path,
    "idle-memory": cmd_idle_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--sink", default="http://127.0.0.1:9")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--transport", choices=["discard", "memory", "http"], default="discard")
    parser.add_argument("--lib", choices=["none", "layersync", "segment"], default="layersync")
    args = parser.parse_args()
    print(json.dumps(COMMANDS[args.command](args)), flush=True)
    os._exit(0)  # skip atexit drains: each tool's own exit path is not what is measured


if __name__ == "__main__":
    main()
