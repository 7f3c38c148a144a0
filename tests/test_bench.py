"""The benchmark runner (bench/run.py) works end to end on a tiny setting.

Real servers on loopback, real wrk, the real counting sink: what is checked is the
runner's output (keys, ratios, delivery counts, the tables), never the timings themselves.
The gates' arithmetic (issue 21: noise is the baseline's own spread) is checked on a made-up
report, without a run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "bench"))  # as `python bench/run.py` has it (no module there shadows another)

import report as bench_report  # noqa: E402  # bench/report.py, after its folder is on the path

VARIANTS = ["asgi-bare", "asgi-reference", "asgi-layersync", "asgi-sentry-errors"]
SPLIT_N, MEMORY_N = 1000, 10_000


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--variants",
        ",".join(VARIANTS),
        "--micro-n",
        "1000",
        "--deliver-n",
        "2000",
        "--split-n",
        str(SPLIT_N),
        "--memory-n",
        str(MEMORY_N),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads((out / "latest.json").read_text()) if (out / "latest.json").exists() else {}
    report["_out"] = str(out)
    return done, report


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_runner_exits_cleanly_and_prints_the_table(bench_run: Any) -> None:
    done, _ = bench_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "variant" in done.stdout and "x base" in done.stdout
    assert "asgi-reference" in done.stdout


@pytest.mark.slow
def test_report_has_the_machine_and_every_variant_with_positive_ratios(bench_run: Any) -> None:
    _, report = bench_run
    keys = {"date", "commit", "machine", "versions", "setup", "variants", "split", "sender", "gates", "skipped"}
    assert keys <= report.keys()
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    assert report["setup"]["rounds"] == 1
    ran = [name for name in VARIANTS if name not in report["skipped"]]
    assert set(ran) == set(report["variants"])
    for name in ran:
        summary = report["variants"][name]
        for key in ("rps_median", "ratio_median", "p50_ms_median", "p99_ms_median", "cpu_us_per_req_median"):
            assert positive(summary[key]), (name, key, summary[key])
        assert summary["errors"] == 0 and summary["non_2xx"] == 0, (name, summary)
        assert len(summary["runs"]) == 1
    assert report["variants"]["asgi-bare"]["ratio_median"] == 1.0


@pytest.mark.slow
def test_missing_peers_are_skipped_with_the_reason(bench_run: Any) -> None:
    done, report = bench_run
    if installed("sentry_sdk"):
        assert "asgi-sentry-errors" in report["variants"]
    else:
        assert report["skipped"]["asgi-sentry-errors"] == "not installed: sentry_sdk"
        assert "skipped asgi-sentry-errors: not installed" in done.stdout
    if not installed("segment.analytics"):
        assert "segment" in report["skipped"] and "segment_deliver" not in report["sender"]


@pytest.mark.slow
def test_the_sink_counted_every_paired_event(bench_run: Any) -> None:
    _, report = bench_run
    for name in ("asgi-reference", "asgi-layersync"):
        summary = report["variants"][name]
        assert summary["events_expected"] == summary["requests"] > 0
        # wrk stops with requests in flight that the server still handled: at least one event each.
        assert summary["events_unique"] >= summary["events_expected"], summary
        assert summary["events_delivered"] == summary["events_unique"], summary  # no duplicates
        assert summary["all_delivered"] is True
    assert report["variants"]["asgi-bare"]["events_delivered"] == 0


@pytest.mark.slow
def test_sender_benchmarks_report_costs_and_full_delivery(bench_run: Any) -> None:
    _, report = bench_run
    sender = report["sender"]
    for key in ("track_discard", "track_http"):
        assert positive(sender[key]["median_us"]) and sender[key]["calls"] == 1000
        assert sender[key]["dropped"] == 0
    deliver = sender["deliver"]
    assert deliver["sink_events"] == deliver["events"] == 2001
    assert positive(deliver["events_per_s"]) and positive(deliver["cpu_us_per_event"])
    assert positive(sender["import"]["layersync_importtime_ms"])
    memory = sender["idle_memory"]
    assert memory["layersync"] > memory["none"] > 0
    paths = sender["request_path"]
    for key in ("bare_us", "unmatched_us", "paired_us", "reference_paired_us", "wsgi_bare_us", "wsgi_paired_us"):
        assert positive(paths[key]), (key, paths)


@pytest.mark.slow
def test_the_per_thread_split_is_the_first_table_paced_and_at_the_highest_rate(bench_run: Any) -> None:
    done, report = bench_run
    out = done.stdout
    first = out.index("per-thread CPU split")
    assert first < out.index("highest rate one core sustains (no pacing)") < out.index("x base")
    assert "|" not in out[:first] and "x base" not in out[:first]  # no table before it
    for mode in ("paced", "max_rate"):
        split = report["split"][mode]
        assert split["n"] == SPLIT_N and split["paced"] is (mode == "paced")
        assert [r["variant"] for r in split["results"]] == ["bare", "reference", "layersync"]
        best = split["best"]
        for name in ("reference", "layersync"):
            row = best[name]
            assert row["arrived"] == SPLIT_N, row  # the sink had every event before the CPU was read
            # CPU is read in 10 ms ticks: a tiny run may round a thread down to 0, so no positivity.
            assert row["total_us"] >= row["request_us"] >= 0 and positive(row["events_per_s"]), row
            assert row["total_us"] == pytest.approx(row["request_us"] + row["delivery_us"])
            assert row["total_over_bare_us"] == pytest.approx(row["total_us"] - best["bare"]["total_us"])
        assert best["bare"]["delivery_us"] == 0 and best["bare"]["total_over_bare_us"] == 0


@pytest.mark.slow
def test_the_memory_run_delivers_every_event_and_samples_rss(bench_run: Any) -> None:
    done, report = bench_run
    memory = report["sender"]["memory"]
    assert memory["events"] == memory["sink_events"] == memory["sent"] == MEMORY_N + 1
    assert memory["dropped"] == 0
    assert positive(memory["events_per_s"]) and positive(memory["cpu_us_per_event"])
    assert 0 < memory["rss_start_kib"] <= memory["rss_peak_kib"]
    assert memory["rss_steady_kib"] <= memory["rss_peak_kib"] and memory["rss_end_kib"] <= memory["rss_peak_kib"]
    assert memory["samples"][-1][1] == MEMORY_N and isinstance(memory["flat"], bool)
    assert f"LayerSync memory run ({MEMORY_N:,} events)" in done.stdout


@pytest.mark.slow
def test_the_gates_of_issue_21_are_printed_from_the_json(bench_run: Any) -> None:
    done, report = bench_run
    rows = {row["gate"]: row for row in report["gates"]}
    assert report["gates"] == bench_report.gates(report)  # the JSON's gates are computed from the JSON
    for row in rows.values():
        assert row["pass"] in (True, False, None) and row["threshold"][:2] in ("<=", ">=")
        assert row["value"] is None or row["pass"] is not None or "(n/a)" in row["threshold"], row
    measured = [
        "request thread CPU/paired request, ours - reference (split, 2,000/s)",
        "process CPU/delivered event, ours - reference (split, 2,000/s)",
        "process CPU/delivered event, ours - reference (split, highest rate)",
        "paired throughput (uvicorn + wrk): ours / reference, same round",
        "track() median, discarding transport",
        "sender: events/s per process (memory run)",
        "memory run: RSS max(peak, end) - steady state",
    ]
    for name in measured:
        assert rows[name]["pass"] is not None, rows[name]
    # One round gives no noise to compare with, and the unmatched variant did not run.
    assert rows["asgi-layersync-unmatched: req/s / asgi-bare's"]["pass"] is None
    table = done.stdout[done.stdout.index("issue 21 gates") :]
    for name in measured:
        assert name in table
    assert "pass" in table or "FAIL" in table
    # The same table again from the saved JSON alone.
    saved = Path(report["_out"]) / "latest.json"
    again = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), str(saved)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-len(rows) :] == table.splitlines()[3 : 3 + len(rows)]


def made_up_report(bare: list[tuple[float, float, float]], other: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Rounds of (req/s, p99 ms, CPU us/request) for asgi-bare and asgi-layersync-unmatched."""

    def runs(values: list[tuple[float, float, float]]) -> dict[str, Any]:
        return {"runs": [{"rps": r, "p99_ms": p, "cpu_us_per_req": c} for r, p, c in values]}

    return {"variants": {"asgi-bare": runs(bare), "asgi-layersync-unmatched": runs(other)}}


def noise_rows(report: dict[str, Any]) -> dict[str, bool | None]:
    prefix = "asgi-layersync-unmatched: "
    return {
        row["gate"][len(prefix) :]: row["pass"] for row in bench_report.gates(report) if row["gate"].startswith(prefix)
    }


def test_within_noise_of_bare_is_measured_against_the_bare_apps_own_spread() -> None:
    bare = [(1000.0, 10.0, 50.0), (900.0, 11.0, 54.0), (1100.0, 9.0, 52.0)]  # spread: 20 %, 20 %, 4 us
    inside = [(850.0, 11.5, 53.5)] * 3  # 0.85 of bare's req/s, 1.15 of its p99, +3.5 us
    assert noise_rows(made_up_report(bare, inside)) == {
        "req/s / asgi-bare's": True,
        "p99 / asgi-bare's": True,
        "CPU per request - asgi-bare's": True,
    }
    outside = [(750.0, 12.5, 57.0)] * 3  # 0.75, 1.25, +5 us: past each spread
    assert noise_rows(made_up_report(bare, outside)) == {
        "req/s / asgi-bare's": False,
        "p99 / asgi-bare's": False,
        "CPU per request - asgi-bare's": False,
    }
    # One round of bare says nothing about how much a round moves: not measured, not passed.
    assert set(noise_rows(made_up_report(bare[:1], inside)).values()) == {None}


def test_a_gate_not_measured_in_a_run_is_reported_as_such() -> None:
    rows = bench_report.gates({"variants": {}})
    assert rows and all(row["pass"] is None and row["value"] is None for row in rows)
    assert "not measured" in bench_report.gates_table(rows)


@pytest.mark.slow
def test_plot_is_written_when_matplotlib_is_installed(bench_run: Any) -> None:
    done, report = bench_run
    png = Path(report["_out"]) / "ratios.png"
    if installed("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists() and "no matplotlib" in done.stdout
