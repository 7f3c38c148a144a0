"""The benchmark suite of issues 12 and 21: one command, tables, a JSON file and a plot.

    .venv/bin/python bench/run.py                 # the full run, about 11 minutes on 2 cores
    .venv/bin/python bench/run.py --quick         # 1 round of 1 s per variant, small sender runs
    .venv/bin/python bench/run.py --variants asgi-bare,asgi-layersync --rounds 3

Each variant runs under a real server on 127.0.0.1 (uvicorn + uvloop + httptools for ASGI,
gunicorn sync and gthread for WSGI), pinned to one core; ``wrk`` and a counting sink that
plays the hub share the other. Variants are interleaved over rounds with the order rotated,
and each is compared with its server's bare app from the same round. The same run splits
a paired event's CPU by thread in-process (``split.py``: paced, and at the highest rate one
core sustains), delivers 1,000,000 events while sampling RSS, and checks issue 21's gates
from what it measured. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loadgen import ensure_wrk, run_wrk, wrk_command
from procs import BENCH, Blackhole, ServerProcess, Sink, down_url, pin, start_servers
from procstat import core_busy_seconds, cpu_seconds_between, tree_cpu
from report import (
    GATES_TITLE,
    Run,
    fill_ratios,
    gates,
    gates_table,
    plot,
    sender_table,
    split_tables,
    summarise,
    variant_table,
    write_json,
)
from split import VARIANTS as SPLIT_VARIANTS
from split import measure as split_measure
from split import summarise as split_summarise
from variants import Variant, select

ROOT = BENCH.parent
PACKAGES = (
    "layersync-middleware",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "gunicorn",
    "flask",
    "httpx",
    "sentry-sdk",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-instrumentation-wsgi",
    "segment-analytics-python",
)


def output(*cmd: str, cwd: Path = ROOT) -> str:
    """What ``cmd`` printed on stdout."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Setup:
    rounds: int
    duration: int  # seconds of each measured wrk run
    warmup: int  # seconds of unmeasured wrk before it (0: none)
    connections: int
    server_core: int | None
    load_core: int | None
    micro_n: int  # track() calls
    deliver_n: int  # events per delivery run
    request_path_n: int
    split_n: int  # events per in-process split run (0: no split)
    split_runs: int  # interleaved runs of each split variant; the lowest total counts
    memory_n: int  # events of the memory run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LayerSync middleware benchmark suite (issue 12)")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, small sender runs: checks the runner")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 3)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", help="comma-separated names (baselines are added); default all")
    parser.add_argument("--no-micro", action="store_true", help="skip the sender micro-benchmarks")
    parser.add_argument("--micro-n", type=int, help="track() calls timed (default 100000)")
    parser.add_argument("--deliver-n", type=int, help="events per delivery run (default 100000)")
    parser.add_argument("--split-n", type=int, help="events per in-process split run (default 20000; 0: none)")
    parser.add_argument("--split-runs", type=int, help="runs of each split variant (default 2)")
    parser.add_argument("--memory-n", type=int, help="events of the memory run (default 1000000)")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where latest.json and ratios.png go")
    return parser.parse_args(argv)


def make_setup(args: argparse.Namespace) -> Setup:
    quick = args.quick
    cores = sorted(os.sched_getaffinity(0))
    pinned = args.server_core in cores and args.load_core in cores and args.server_core != args.load_core
    if not pinned:
        print(f"cores {cores}: not pinning (need two distinct cores {args.server_core} and {args.load_core})")

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Setup(
        rounds=pick(args.rounds, 5, 1),
        duration=pick(args.duration, 3, 1),
        warmup=pick(args.warmup, 1, 0),
        connections=args.connections,
        server_core=args.server_core if pinned else None,
        load_core=args.load_core if pinned else None,
        micro_n=pick(args.micro_n, 100_000, 2_000),
        deliver_n=pick(args.deliver_n, 100_000, 5_000),
        request_path_n=2_000 if quick else 10_000,
        split_n=pick(args.split_n, 20_000, 2_000),
        split_runs=pick(args.split_runs, 2, 1),
        memory_n=pick(args.memory_n, 1_000_000, 20_000),
    )


# -- the machine -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        head = output("git", "rev-parse", "--short", "HEAD").strip()
        dirty = output("git", "status", "--porcelain", "--", "layersync_middleware").strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


# -- the server benchmark --------------------------------------------------------------------
def measure(
    variant: Variant, server: ServerProcess, sink: Sink, setup: Setup, wrk: str, nonce: Iterator[str], warm: bool
) -> Run:
    """One wrk run against one variant: throughput, latency, server CPU, and what reached the sink.
    ``warm``: run wrk unmeasured first (the first round: lazy imports, caches, connection pools)."""
    load = pin(setup.load_core)

    def command(seconds: int) -> list[str]:
        return wrk_command(
            wrk, server.url, seconds=seconds, connections=setup.connections, mode=variant.mode, nonce=next(nonce)
        )

    if warm:
        run_wrk(command(setup.warmup), load)
    sink.settle()  # the warm-up's events are delivered before the counters start
    sink.reset()
    before, t0 = tree_cpu(server.pid), time.monotonic()
    core_before, load_before = core_busy_seconds(setup.server_core), core_busy_seconds(setup.load_core)
    result = run_wrk(command(setup.duration), load)
    load_busy = (core_busy_seconds(setup.load_core) - load_before) / result.seconds
    expected = result.requests - result.non_2xx if variant.sends_events else 0
    counts = sink.settle(expect=expected, quiet=0.5 if variant.sends_events else 0.3)
    cpu = cpu_seconds_between(before, tree_cpu(server.pid))
    # What else ran on the server's core meanwhile (other programs on a shared machine):
    # a run with a high share here measured the neighbours too. Its CPU per request did not.
    server_wall = time.monotonic() - t0
    others = (core_busy_seconds(setup.server_core) - core_before - cpu) / server_wall
    # A run stops with up to `connections` requests in flight: the server handled them and
    # sent their events, wrk did not count them. So "missing" is expected minus distinct ids.
    return {
        "rps": result.rps,
        "requests": result.requests,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_us_per_req": cpu / result.requests * 1e6 if result.requests else None,
        "errors": result.errors,
        "non_2xx": result.non_2xx,
        "events_expected": expected,
        "events_delivered": counts["events"],
        "events_unique": counts["unique_events"],
        "events_missing": max(0, expected - counts["unique_events"]),
        "events_duplicated": counts["events"] - counts["unique_events"],
        "sink_posts": counts["requests"] + counts["other_requests"],
        "other_load": max(0.0, others),
        # Busy share of the load generator's core during wrk: near 1.0 with the server core
        # not saturated means wrk and the sink, not the server, set the pace of that run.
        "load_core_busy": load_busy,
        "server_core_share": cpu / server_wall,
    }


def run_rounds(
    variants: list[Variant], servers: dict[str, ServerProcess], sink: Sink, setup: Setup, wrk: str
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {v.name: [] for v in variants}
    nonce = (f"{i:06x}" for i in itertools.count(1))
    for number in range(setup.rounds):
        shift = number % len(variants)
        order = variants[shift:] + variants[:shift]  # rotated: no variant always runs first or last
        this_round: dict[str, Run] = {}
        for position, variant in enumerate(order):
            warm = number == 0 and setup.warmup > 0
            run = measure(variant, servers[variant.server.key], sink, setup, wrk, nonce, warm)
            run.update(round=number + 1, position=position + 1)
            this_round[variant.name] = run
            print(
                f"  round {number + 1}/{setup.rounds} {variant.name:26} {run['rps']:8.0f} req/s  "
                f"p99 {run['p99_ms']:6.2f} ms  CPU {run['cpu_us_per_req'] or 0:5.0f} us/req",
                flush=True,
            )
        fill_ratios(this_round, variants)
        for name, run in this_round.items():
            runs[name].append(run)
    return runs


# -- the sender micro-benchmarks ---------------------------------------------------------------
def micro(setup: Setup, sink: Sink, *args: str) -> dict[str, Any]:
    command = [*pin(setup.server_core), sys.executable, str(BENCH / "micro.py"), *args, "--sink", sink.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"micro.py {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    last = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return result


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def deliver(setup: Setup, sink: Sink, lib: str) -> dict[str, Any]:
    sink.settle()
    sink.reset()
    result = micro(setup, sink, "deliver", "--lib", lib, "--n", str(setup.deliver_n))
    result["sink_events"] = sink.settle(expect=result["events"])["unique_events"]
    return result


def import_ms(module: str, runs: int = 5) -> tuple[float, float]:
    """(median ``-X importtime`` cumulative ms, median wall ms over a bare interpreter)."""
    cumulative, wall, bare = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        wall.append(time.perf_counter() - t0)
        cmd = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        match = re.search(rf"\|\s*(\d+)\s*\|\s{{0,2}}{re.escape(module)}\s*$", done.stderr, re.MULTILINE)
        cumulative.append(int(match.group(1)) / 1000 if match else float("nan"))
    return statistics.median(cumulative), (statistics.median(wall) - statistics.median(bare)) * 1000


def memory_run(setup: Setup, sink: Sink) -> dict[str, Any]:
    print(f"sender: memory run, {setup.memory_n:,} events", flush=True)
    sink.settle()
    sink.reset()
    result = micro(setup, sink, "memory", "--n", str(setup.memory_n))
    result["sink_events"] = sink.settle(expect=result["events"])["unique_events"]
    return result


def run_micro(setup: Setup, sink: Sink, skipped: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = str(setup.micro_n)
    print("sender: track() discarding, track() over HTTP, delivery, request path, import, memory", flush=True)
    out["track_discard"] = micro(setup, sink, "track", "--transport", "discard", "--n", n)
    out["track_http"] = micro(setup, sink, "track", "--transport", "http", "--n", n)
    out["deliver"] = deliver(setup, sink, "layersync")
    out["memory"] = memory_run(setup, sink)
    if has("segment.analytics"):
        out["segment_track"] = micro(setup, sink, "segment-track", "--n", n)
        out["segment_deliver"] = deliver(setup, sink, "segment")
    else:
        skipped["segment"] = "not installed: segment-analytics-python"
        print("skipped segment-analytics-python: not installed", flush=True)
    out["request_path"] = micro(setup, sink, "request-path", "--n", str(setup.request_path_n))
    cumulative, wall = import_ms("layersync_middleware", runs=1 if setup.micro_n < 10_000 else 5)
    out["import"] = {"layersync_importtime_ms": cumulative, "layersync_wall_ms": wall}
    libs = ["none", "layersync"] + (["segment"] if has("segment.analytics") else [])
    out["idle_memory"] = {lib: micro(setup, sink, "idle-memory", "--lib", lib)["rss_kib"] for lib in libs}
    return out


# -- the per-thread split, in-process ---------------------------------------------------------
def run_split(setup: Setup, sink: Sink) -> dict[str, Any]:
    """split.py's variants, paced at 2,000 requests/s and unpaced, each child pinned to the
    server's core, the sink shared with the rest of the run."""
    out: dict[str, Any] = {}
    for key, paced, what in (("paced", True, "paced 2,000/s"), ("max_rate", False, "highest rate one core sustains")):
        print(f"split: {what}, {setup.split_n:,} events x {setup.split_runs} run(s) per variant", flush=True)
        sink.settle()
        results = split_measure(
            sink.url, list(SPLIT_VARIANTS), setup.split_n, setup.split_runs, setup.server_core, paced
        )
        out[key] = {"n": setup.split_n, "runs": setup.split_runs, "paced": paced}
        out[key].update(results=results, best=split_summarise(results))
    return out


# -- the whole run -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = make_setup(args)
    variants, skipped = select(args.variants.split(",") if args.variants else None)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", flush=True)
    if not shutil.which("taskset") and setup.server_core is not None:
        raise SystemExit("taskset is needed (util-linux)")
    wrk = ensure_wrk()
    if setup.load_core is not None:
        os.sched_setaffinity(0, {setup.load_core})  # our own polling stays off the server's core
    started = datetime.now(timezone.utc)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "setup": setup.__dict__,
    }
    sink, blackhole = Sink(setup.load_core), Blackhole()
    hubs = {"sink": sink.url, "down": down_url(), "hang": blackhole.url}
    try:
        with open(args.out / "servers.log", "w") as log:
            servers = start_servers(
                list({v.server.key: v.server for v in variants}.values()), hubs, setup.server_core, log
            )
            try:
                print(f"{len(variants)} variants x {setup.rounds} rounds of {setup.duration} s", flush=True)
                runs = run_rounds(variants, servers, sink, setup, wrk)
            finally:
                for server in servers.values():
                    server.stop()
        report["variants"] = {v.name: {**summarise(v, runs[v.name]), "runs": runs[v.name]} for v in variants}
        report["split"] = run_split(setup, sink) if setup.split_n else {}
        report["sender"] = {} if args.no_micro else run_micro(setup, sink, skipped)
    finally:
        sink.close()
        blackhole.close()
    report["skipped"] = skipped
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
    return finish(report, args.out)


def finish(report: dict[str, Any], out: Path) -> int:
    summaries = {name: {k: v for k, v in s.items() if k != "runs"} for name, s in report["variants"].items()}
    m = report["machine"]
    title = f"{report['date']}  {report['commit']}  nproc={m['nproc']}  {m['cpu_model']}"
    print(f"\n{title}\n")
    if report["split"]:
        print(split_tables(report["split"]) + "\n")
    print(variant_table(summaries))
    if report["sender"]:
        print()
        print(sender_table(report["sender"]))
    report["gates"] = gates(report)
    print(f"\n{GATES_TITLE}\n" + gates_table(report["gates"]))
    write_json(report, out / "latest.json")
    plotted = plot(summaries, out / "ratios.png", title)
    print(f"\nwrote {out / 'latest.json'}" + (f" and {out / 'ratios.png'}" if plotted else " (no matplotlib: no plot)"))
    lost = [n for n, s in summaries.items() if s["sends_events"] and not s["all_delivered"]]
    for key, split in report["split"].items():
        lost += [
            f"split {key} {r['variant']}" for r in split["results"] if r["variant"] != "bare" and r["arrived"] < r["n"]
        ]
    memory = report["sender"].get("memory")
    if memory and memory["sink_events"] < memory["events"]:
        lost.append("memory run")
    if lost:
        print(f"events missing or duplicated at the sink: {', '.join(lost)}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
