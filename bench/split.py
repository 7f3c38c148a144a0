"""Where a paired event's CPU goes: the request thread and the delivery threads, apart.

    python bench/split.py                       # bare, reference, layersync; 20,000 events, 2 runs each
    python bench/split.py --n 5000 --runs 1     # quicker
    python bench/split.py child --variant layersync --n 20000 --sink URL   # one run, one JSON line

The ASGI app is called directly in one process (no server, no load generator), paced at
2,000 requests/s (200 requests, then 100 ms of sleep), every request a distinct paired
``add_to_cart`` with browser-like headers. A counting sink (``sink.py``) in another
process, pinned to the other core, plays the hub. When the sink has every event, the CPU
of each thread is read from ``/proc/self/task/<tid>/stat``: the main thread is the
request path, the others are delivery. Each variant runs in a fresh process pinned to one
core; runs are interleaved and the lower total counts (the issue's method). Unlike wrk under
uvicorn this splits the request path from delivery and moves little between runs.
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
from pathlib import Path
from typing import Any

from procstat import TICKS_PER_SECOND

BENCH = Path(__file__).resolve().parent
SITE_ID, SECRET = "site_bench", "sk_bench_0123456789"
VARIANTS = ("bare", "reference", "layersync")
PACE = 200  # requests between sleeps
PAUSE = 0.1  # seconds: 200 per 100 ms is 2,000 requests/s
BODY = b'{"sku":"SKU-A","quantity":1}'


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


def build_app(variant: str, sink: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def add(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/cart/add", add, methods=["POST"])])
    if variant == "bare":
        return app
    if variant == "reference":
        from reference import ReferenceLayer, Shipper

        return ReferenceLayer(app, Shipper(sink, SECRET, SITE_ID))
    from layersync_middleware import LayerSync, LayerSyncMiddleware

    client = LayerSync(site_id=SITE_ID, secret_key=SECRET, api_url=sink, matcher=["/api/cart/*"])
    return LayerSyncMiddleware(app, client=client)


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


def child(variant: str, n: int, sink: str) -> dict[str, Any]:
    app = build_app(variant, sink)
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
            await asyncio.sleep(PAUSE)

    main = os.getpid()
    before = thread_ticks()
    started = time.monotonic()
    asyncio.run(drive())
    request_ticks = thread_ticks().get(main, 0) - before.get(main, 0)
    wanted = 0 if variant == "bare" else n
    deadline = time.monotonic() + 120
    while sink_count(sink) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    arrived = sink_count(sink) if wanted else 0
    after = thread_ticks()
    other = sum(t - before.get(tid, 0) for tid, t in after.items() if tid != main)
    per = 1e6 / TICKS_PER_SECOND / n
    return {
        "variant": variant,
        "n": n,
        "arrived": arrived,
        "request_us": request_ticks * per,
        "delivery_us": other * per,
        "total_us": (request_ticks + other) * per,
        "seconds": time.monotonic() - started,
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


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sink_proc, sink = start_sink(args.load_core)
    results: list[dict[str, Any]] = []
    try:
        for _ in range(args.runs):
            for variant in args.variants.split(","):
                urllib.request.urlopen(urllib.request.Request(sink + "/_reset", data=b"", method="POST"), timeout=5)
                cmd = ["taskset", "-c", str(args.server_core), sys.executable, __file__, "child"]
                cmd += ["--variant", variant, "--n", str(args.n), "--sink", sink]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        if sink_proc.stdout is not None:
            sink_proc.stdout.close()
    return results


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run with the lowest total per variant (the issue's method), and bare subtracted."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["variant"] not in best or r["total_us"] < best[r["variant"]]["total_us"]:
            best[r["variant"]] = r
    bare = best.get("bare", {}).get("total_us", 0.0)
    for r in best.values():
        r["over_bare_us"] = r["total_us"] - bare
    return best


def table(best: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | request thread µs/event | delivery threads µs/event | total over bare | arrived |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        r = best.get(name)
        if r is None:
            continue
        over = "" if name == "bare" else f"+{r['over_bare_us']:.1f}"
        arrived = "" if name == "bare" else f"{r['arrived']}/{r['n']}"
        lines.append(f"| {name} | {r['request_us']:.1f} | {r['delivery_us']:.1f} | {over} | {arrived} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--variant", default="layersync")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sink", default="")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(child(args.variant, args.n, args.sink)), flush=True)
        return 0
    best = summarise(run(args))
    print(table(best))
    if args.json:
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
