"""Where a paired event's CPU goes: the request thread and the delivery threads, apart.

    python bench/split.py                       # bare, reference, layersync; 20,000 events, 2 runs each
    python bench/split.py --n 5000 --runs 1     # quicker
    python bench/split.py --max-rate            # unpaced: the highest rate one core sustains
    python bench/split.py child --variant layersync --n 20000 --sink URL   # one run, one JSON line

The ASGI app is called directly in one process (no server, no load generator), paced at
2,000 requests/s (200 requests, then 100 ms of sleep), every request a distinct paired
``add_to_cart`` with browser-like headers. A counting sink (``sink.py``) in another
process, pinned to the other core, plays the hub. When the sink has every event, the CPU
of each thread is read from ``/proc/self/task/<tid>/stat``: the main thread is the
request path, the others are delivery. Each variant runs in a fresh process pinned to one
core; runs are interleaved and the lower total counts (the issue's method). Unlike wrk under
uvicorn this splits the request path from delivery and moves little between runs.

``--max-rate`` drops the pacing: requests go as fast as the core takes them, and the
driver only waits (sleeping, so the delivery threads get the core) while more than
``BACKLOG`` events wait in the layer's queue. The rate it reaches is the highest one core
sustains with every event delivered: request path and delivery share that core, and no
queue overflows (both layers hold 10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procstat import TICKS_PER_SECOND

BENCH = Path(__file__).resolve().parent
SITE_ID, SECRET = "site_bench", "sk_bench_0123456789"
VARIANTS = ("bare", "reference", "layersync")
PACE = 200  # requests between sleeps (and between backlog checks when unpaced)
PAUSE = 0.1  # seconds: 200 per 100 ms is 2,000 requests/s
RATE = PACE / PAUSE
BACKLOG = 5_000  # unpaced: events waiting in the layer's queue before the driver waits
BODY = b'{"sku":"SKU-A","quantity":1}'
STALL = 15.0  # seconds without a new event at the sink: the rest was lost (reported, not waited for)


def thread_ticks() -> dict[int, int]:
    """utime + stime of every thread of this process, by thread id."""
    ticks = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def sink_count(sink: str) -> int:
    with urllib.request.urlopen(sink + "/_count", timeout=5) as response:
        return int(json.load(response)["unique_events"])


def sink_reset(sink: str) -> None:
    urllib.request.urlopen(urllib.request.Request(sink + "/_reset", data=b"", method="POST"), timeout=5).close()


def build_app(variant: str, sink: str) -> tuple[Any, Callable[[], int]]:
    """The app, and how many events wait in its layer (queued or being sent)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def add(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/cart/add", add, methods=["POST"])])
    if variant == "bare":
        return app, lambda: 0
    if variant == "reference":
        from reference import ReferenceLayer, Shipper

        shipper = Shipper(sink, SECRET, SITE_ID)
        return ReferenceLayer(app, shipper), lambda: len(shipper.queue)
    from layersync_middleware import LayerSync, LayerSyncMiddleware

    client = LayerSync(site_id=SITE_ID, secret_key=SECRET, api_url=sink, matcher=["/api/cart/*"])
    return LayerSyncMiddleware(app, client=client), lambda: client.stats().queued


def scope(n: int, nonce: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/api/cart/add",
        "raw_path": b"/api/cart/add",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"shop.example"),
            (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
            (b"cookie", b"_fbp=fb.1.1700000000000.42; _ga=GA1.1.42.1700000000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"x-layersync-event-id", f"atc_{nonce}{n:010d}".encode()),
            (b"x-layersync-event-name", b"add_to_cart"),
        ],
        "client": ("203.0.113.7", 50000),
        "server": ("shop.example", 443),
    }


def child(variant: str, n: int, sink: str, paced: bool = True) -> dict[str, Any]:
    app, backlog = build_app(variant, sink)
    nonce = f"{os.getpid():06d}"[-6:]
    scopes = [scope(i, nonce) for i in range(n)]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def drive() -> None:
        for start in range(0, n, PACE):
            for s in scopes[start : start + PACE]:
                await app(s, receive, send)
            if paced:
                await asyncio.sleep(PAUSE)
            else:
                # Blocking on purpose: the loop has nothing else to run, and a sleeping main
                # thread hands the core (and the GIL) to the delivery threads.
                while backlog() > BACKLOG:
                    time.sleep(0.001)

    main = os.getpid()
    before = thread_ticks()
    started = time.monotonic()
    asyncio.run(drive())
    request_ticks = thread_ticks().get(main, 0) - before.get(main, 0)
    driven = time.monotonic() - started
    wanted = 0 if variant == "bare" else n
    arrived, moved = 0, time.monotonic()
    while wanted and arrived < wanted and time.monotonic() - moved < STALL:
        time.sleep(0.05 if paced else 0.01)
        count = sink_count(sink)
        if count > arrived:
            arrived, moved = count, time.monotonic()
    seconds = time.monotonic() - started  # the last event's arrival (within one poll)
    after = thread_ticks()
    other = sum(t - before.get(tid, 0) for tid, t in after.items() if tid != main)
    per = 1e6 / TICKS_PER_SECOND / n
    return {
        "variant": variant,
        "paced": paced,
        "n": n,
        "arrived": arrived,
        "request_us": request_ticks * per,
        "delivery_us": other * per,
        "total_us": (request_ticks + other) * per,
        "seconds": seconds,
        "requests_per_s": n / driven,
        "events_per_s": n / seconds,
        # The process's share of its core: near 1.0 unpaced means the core, not a timer, set the rate.
        "core_share": (request_ticks + other) / TICKS_PER_SECOND / seconds,
    }


def start_sink(core: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, str(BENCH / "sink.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    return proc, f"http://127.0.0.1:{port}"


def measure(
    sink: str, variants: list[str], n: int, runs: int, core: int | None, paced: bool = True
) -> list[dict[str, Any]]:
    """``runs`` rounds of one fresh child per variant, interleaved; the sink is reset before each."""
    results: list[dict[str, Any]] = []
    pin = [] if core is None else ["taskset", "-c", str(core)]
    for number in range(runs):
        for variant in variants:
            sink_reset(sink)
            cmd = [*pin, sys.executable, str(BENCH / "split.py"), "child", "--variant", variant]
            cmd += ["--n", str(n), "--sink", sink] + ([] if paced else ["--max-rate"])
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"split.py child {variant} failed: {out.stderr.strip()[-2000:]}")
            results.append({**json.loads(out.stdout.strip().splitlines()[-1]), "run": number + 1})
    return results


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run with the lowest total per variant (the issue's method), with bare subtracted
    from each column; ``spread_us``: max - min of the total over the runs (the noise)."""
    best: dict[str, dict[str, Any]] = {}
    totals: dict[str, list[float]] = {}
    for r in results:
        totals.setdefault(r["variant"], []).append(r["total_us"])
        if r["variant"] not in best or r["total_us"] < best[r["variant"]]["total_us"]:
            best[r["variant"]] = dict(r)
    bare = best.get("bare", {})
    for name, r in best.items():
        for key in ("request", "delivery", "total"):
            r[f"{key}_over_bare_us"] = r[f"{key}_us"] - bare.get(f"{key}_us", 0.0)
        r["over_bare_us"] = r["total_over_bare_us"]
        r["spread_us"] = max(totals[name]) - min(totals[name])
        r["runs"] = len(totals[name])
    return best


def table(best: dict[str, dict[str, Any]]) -> str:
    """The issue's table: each thread's CPU per event, and over bare, variants side by side."""
    paced = all(r.get("paced", True) for r in best.values())
    rate = "events/s" if paced else "events/s (max)"
    lines = [
        f"| variant | request thread µs/event | over bare | sender threads µs/event | total µs/event "
        f"| total over bare | spread | {rate} | core | arrived |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        r = best.get(name)
        if r is None:
            continue
        bare = name == "bare"
        over = "" if bare else f"{r['request_over_bare_us']:+.1f}"
        total_over = "" if bare else f"{r['total_over_bare_us']:+.1f}"
        arrived = "" if bare else f"{r['arrived']}/{r['n']}"
        lines.append(
            f"| {name} | {r['request_us']:.1f} | {over} | {r['delivery_us']:.1f} | {r['total_us']:.1f} "
            f"| {total_over} | {r['spread_us']:.1f} | {r['events_per_s']:.0f} | {r['core_share']:.0%} | {arrived} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--variant", default="layersync")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--max-rate", action="store_true", help="no pacing: the highest rate one core sustains")
    parser.add_argument("--sink", default="")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    args = parser.parse_args(argv)
    paced = not args.max_rate
    if args.mode == "child":
        print(json.dumps(child(args.variant, args.n, args.sink, paced)), flush=True)
        return 0
    sink_proc, sink = start_sink(args.load_core)
    try:
        best = summarise(measure(sink, args.variants.split(","), args.n, args.runs, args.server_core, paced))
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        if sink_proc.stdout is not None:
            sink_proc.stdout.close()
    print(table(best))
    if args.json:
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
