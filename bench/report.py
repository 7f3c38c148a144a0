"""Summaries, the printed tables, the JSON file and the PNG plot of a benchmark run.

python bench/report.py [bench/results/latest.json]   # the split and the gates again, from a saved run
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from split import table
from variants import Variant

Run = dict[str, Any]


def fill_ratios(round_runs: dict[str, Run], variants: list[Variant]) -> None:
    """Ratio to the baseline's throughput, and extra CPU per request, from the same round."""
    for variant in variants:
        run, base = round_runs.get(variant.name), round_runs.get(variant.baseline)
        if run is None or base is None or not base["rps"]:
            continue
        run["ratio"] = run["rps"] / base["rps"]
        if run["cpu_us_per_req"] is not None and base["cpu_us_per_req"] is not None:
            run["extra_cpu_us_per_req"] = run["cpu_us_per_req"] - base["cpu_us_per_req"]


def _median(runs: list[Run], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(variant: Variant, runs: list[Run]) -> dict[str, Any]:
    ratios = [r["ratio"] for r in runs if r.get("ratio") is not None]
    expected = sum(r["events_expected"] for r in runs)
    unique = sum(r["events_unique"] for r in runs)
    return {
        "label": variant.label,
        "server": variant.server.kind,
        "mode": variant.mode,
        "baseline": variant.baseline,
        "sends_events": variant.sends_events,
        "rounds": len(runs),
        "rps_median": _median(runs, "rps"),
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "p50_ms_median": _median(runs, "p50_ms"),
        "p99_ms_median": _median(runs, "p99_ms"),
        "cpu_us_per_req_median": _median(runs, "cpu_us_per_req"),
        "extra_cpu_us_per_req_median": _median(runs, "extra_cpu_us_per_req"),
        "other_load_median": _median(runs, "other_load"),
        "server_core_share_median": _median(runs, "server_core_share"),
        "load_core_busy_median": _median(runs, "load_core_busy"),
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "events_expected": expected,
        "events_delivered": sum(r["events_delivered"] for r in runs),
        "events_unique": unique,
        "events_missing": sum(r["events_missing"] for r in runs),
        "all_delivered": all(r["events_missing"] == 0 and r["events_duplicated"] == 0 for r in runs),
    }


def _fmt(value: float | None, spec: str) -> str:
    if value is None:  # as wide as a number would be
        width = "".join(itertools.takewhile(str.isdigit, spec.lstrip("+")))
        return "-".rjust(int(width or 0))
    return format(value, spec)


def variant_table(summaries: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'variant':26} {'server':16} {'req/s':>8} {'x base':>6} {'(min-max)':>11} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU us':>7} {'+CPU us':>7} {'srv':>4} {'load':>4} {'others':>6}  events/2xx"
    )
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        spread = f"{_fmt(s['ratio_min'], '.2f')}-{_fmt(s['ratio_max'], '.2f')}"
        events = f"{s['events_unique']}/{s['events_expected']}" if s["sends_events"] else "-"
        if s["sends_events"] and not s["all_delivered"]:
            events += f" MISSING {s['events_missing']}"
        lines.append(
            f"{name:26} {s['server']:16} {_fmt(s['rps_median'], '8.0f')} {_fmt(s['ratio_median'], '6.2f')} "
            f"{spread:>11} {_fmt(s['p50_ms_median'], '7.2f')} {_fmt(s['p99_ms_median'], '7.2f')} "
            f"{_fmt(s['cpu_us_per_req_median'], '7.0f')} {_fmt(s['extra_cpu_us_per_req_median'], '+7.0f')} "
            f"{_fmt(s.get('server_core_share_median'), '4.0%')} {_fmt(s.get('load_core_busy_median'), '4.0%')} "
            f"{_fmt(s['other_load_median'], '6.0%')}  {events}"
        )
    return "\n".join(lines)


def sender_table(sender: dict[str, Any]) -> str:
    rows = []
    for key, title in (
        ("track_discard", "LayerSync track(), discarding transport"),
        ("track_http", "LayerSync track(), HTTP to the sink"),
        ("segment_track", "segment track(), HTTP to the sink"),
    ):
        if key in sender:
            r = sender[key]
            rows.append(f"{title:44} median {r['median_us']:7.2f} us   p99 {r['p99_us']:7.2f} us")
    for key, title in (("deliver", "LayerSync delivery"), ("segment_deliver", "segment delivery")):
        if key in sender:
            r = sender[key]
            rows.append(
                f"{title:44} {r['events_per_s']:9.0f} events/s  {r['cpu_us_per_event']:6.1f} us CPU/event  "
                f"delivered {r['sink_events']}/{r['events']}  RSS {r['rss_before_kib']}->{r['rss_after_kib']} KiB"
            )
    if "memory" in sender:
        r = sender["memory"]
        rows.append(memory_line(r))
    if "request_path" in sender:
        r = sender["request_path"]
        rows.append(
            "request path (in-process, thread CPU, discarding transport):  "
            + "  ".join(f"{k[:-3]} {v:.1f}" for k, v in r.items() if k.endswith("_us"))
            + "  (us/request)"
        )
    if "import" in sender:
        r = sender["import"]
        rows.append(
            f"import layersync_middleware: {r['layersync_importtime_ms']:.1f} ms (-X importtime cumulative), "
            f"{r['layersync_wall_ms']:.1f} ms wall over bare python"
        )
    if "idle_memory" in sender:
        r = sender["idle_memory"]
        rows.append("idle RSS (KiB): " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return "\n".join(rows)


def memory_line(r: dict[str, Any]) -> str:
    mib = {k: r[f"rss_{k}_kib"] / 1024 for k in ("start", "steady", "peak", "end")}
    verdict = "flat" if r["flat"] else "NOT FLAT"
    return (
        f"{'LayerSync memory run (' + format(r['events'] - 1, ',') + ' events)':44} {r['events_per_s']:9.0f} events/s  "
        f"{r['cpu_us_per_event']:6.1f} us CPU/event  delivered {r['sink_events']}/{r['events']}  "
        f"RSS MiB start {mib['start']:.1f} steady {mib['steady']:.1f} peak {mib['peak']:.1f} end {mib['end']:.1f}: "
        f"{verdict} (peak - steady {r['peak_over_steady_mib']:+.1f}, end - steady {r['end_over_steady_mib']:+.1f} MiB, "
        f"bound {r['flat_mib']} MiB)"
    )


def split_tables(split: dict[str, Any]) -> str:
    """The per-thread split, paced and at the highest rate, as split.py prints it."""
    blocks = []
    for key, title in (
        ("paced", "paced at 2,000 paired requests/s"),
        ("max_rate", "at the highest rate one core sustains (no pacing)"),
    ):
        if key in split:
            r = split[key]
            head = f"per-thread CPU split, in-process, {title}: {r['n']:,} events, lowest total of {r['runs']} run(s)"
            blocks.append(head + "\n" + table(r["best"]))
    return "\n\n".join(blocks)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def plot(summaries: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    """Horizontal bars of the median ratio with the min-max spread; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [n for n, s in summaries.items() if s["ratio_median"] is not None]
    medians = [summaries[n]["ratio_median"] for n in names]
    low = [m - summaries[n]["ratio_min"] for n, m in zip(names, medians)]
    high = [summaries[n]["ratio_max"] - m for n, m in zip(names, medians)]
    colours = ["tab:blue" if n.startswith("asgi") else "tab:orange" for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(names) + 1.5))
    ax.barh(names, medians, xerr=[low, high], color=colours, capsize=3)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.invert_yaxis()
    ax.set_xlabel("throughput / bare app of the same server, same round (median, min-max)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- issue 21's gates ---------------------------------------------------------------------------
Gate = dict[str, Any]


def _get(tree: dict[str, Any], *keys: str) -> float | None:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _quotient(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return format(value, ",.0f") if abs(value) >= 1000 else format(value, ".3g")


def spread(runs: list[Run], key: str) -> float | None:
    """The noise of one variant: (max - min) / median of ``key`` over its rounds; None with
    fewer than two rounds (one round says nothing about how much a round moves)."""
    values: list[float] = [r[key] for r in runs if r.get(key) is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return (max(values) - min(values)) / statistics.median(values)


def _versus_reference(split: dict[str, Any], key: str) -> float | None:
    """LayerSync's ``key`` minus the reference layer's, from one mode of the split."""
    return _difference(_get(split, "best", "layersync", key), _get(split, "best", "reference", key))


def _paired_over_reference(report: dict[str, Any]) -> float | None:
    """Median over rounds of LayerSync's throughput / the reference layer's, same round."""
    variants = report["variants"]
    if "asgi-layersync" not in variants or "asgi-reference" not in variants:
        return None
    ours = {r["round"]: r["rps"] for r in variants["asgi-layersync"]["runs"]}
    ref = {r["round"]: r["rps"] for r in variants["asgi-reference"]["runs"]}
    ratios = [ours[n] / ref[n] for n in ours if ref.get(n)]
    return statistics.median(ratios) if ratios else None


def _gate(name: str, value: float | None, op: str, bound: float | None, unit: str, note: str = "") -> Gate:
    """``bound`` None: the threshold itself was not measured (a noise from one round)."""
    measured = value is not None and bound is not None
    passed = None if not measured else (value <= bound if op == "<=" else value >= bound)  # type: ignore[operator]
    threshold = f"{op} {_num(bound)} {unit}".strip() if bound is not None else f"{op} noise (n/a)"
    return {"gate": name, "threshold": threshold, "value": value, "unit": unit, "pass": passed, "note": note}


def _within_noise(report: dict[str, Any], name: str, baseline: str, cpu_too: bool) -> list[Gate]:
    """``name`` against ``baseline`` from the same run: throughput and p99 against the
    baseline's own spread over rounds, CPU per request (``cpu_too``) against its max - min."""
    runs = report["variants"].get(name, {}).get("runs", [])
    base = report["variants"].get(baseline, {}).get("runs", [])
    rps, p99 = spread(base, "rps"), spread(base, "p99_ms")
    cpu = [r["cpu_us_per_req"] for r in base if r.get("cpu_us_per_req") is not None]
    note = f"noise: {len(base)} rounds of {baseline}"
    rows = [
        _gate(
            f"{name}: req/s / {baseline}'s",
            _quotient(_median(runs, "rps"), _median(base, "rps")),
            ">=",
            None if rps is None else 1 - rps,
            "",
            note,
        ),
        _gate(
            f"{name}: p99 / {baseline}'s",
            _quotient(_median(runs, "p99_ms"), _median(base, "p99_ms")),
            "<=",
            None if p99 is None else 1 + p99,
            "",
            note,
        ),
    ]
    if cpu_too:
        rows.append(
            _gate(
                f"{name}: CPU per request - {baseline}'s",
                _difference(_median(runs, "cpu_us_per_req"), _median(base, "cpu_us_per_req")),
                "<=",
                max(cpu) - min(cpu) if len(cpu) >= 2 else None,
                "us",
                note,
            )
        )
    return rows


def gates(report: dict[str, Any]) -> list[Gate]:
    """Each gate of issue 21 with what this run measured; ``pass`` None: not measured."""
    split, s = report.get("split", {}), report.get("sender", {})
    paced, top = split.get("paced", {}), split.get("max_rate", {})
    memory = s.get("memory", {})
    events = memory.get("events", 0) - 1 if memory else 0
    size_note = "" if events >= 1_000_000 else f"{events:,} events, not 1,000,000: a smoke check"
    rows = [
        _gate(
            "request thread CPU/paired request, ours - reference (split, 2,000/s)",
            _versus_reference(paced, "request_us"),
            "<=",
            3,
            "us",
        ),
        _gate(
            "request path CPU/paired request, ours - reference (micro, discarding)",
            _difference(_get(s, "request_path", "paired_us"), _get(s, "request_path", "reference_paired_us")),
            "<=",
            3,
            "us",
        ),
        _gate(
            "process CPU/delivered event, ours - reference (split, 2,000/s)",
            _versus_reference(paced, "total_us"),
            "<=",
            0,
            "us",
        ),
        _gate(
            "process CPU/delivered event, ours - reference (split, highest rate)",
            _versus_reference(top, "total_us"),
            "<=",
            0,
            "us",
        ),
        _gate(
            "paired throughput (uvicorn + wrk): ours / reference, same round",
            _paired_over_reference(report),
            ">=",
            1.0,
            "",
        ),
        _gate("track() median, discarding transport", _get(s, "track_discard", "median_us"), "<=", 5, "us"),
        _gate("sender: events/s per process (memory run)", _get(memory, "events_per_s"), ">=", 50_000, "/s", size_note),
        _gate(
            "memory run: RSS max(peak, end) - steady state",
            None if not memory else max(memory["peak_over_steady_mib"], memory["end_over_steady_mib"]),
            "<=",
            memory.get("flat_mib", 4),
            "MiB",
            size_note,
        ),
    ]
    for name in ("asgi-layersync-unmatched", "asgi-layersync-noheaders"):
        rows += _within_noise(report, name, "asgi-bare", cpu_too=True)
    for name in ("asgi-layersync-hub-down", "asgi-layersync-hub-hang"):
        rows += _within_noise(report, name, "asgi-layersync", cpu_too=False)
    return rows


def gates_table(rows: list[Gate]) -> str:
    header = f"{'gate':72} {'threshold':>14} {'measured':>10}  verdict"
    lines = [header, "-" * len(header)]
    for row in rows:
        verdict = "not measured" if row["pass"] is None else ("pass" if row["pass"] else "FAIL")
        value = _num(row["value"]).rjust(10)
        note = f"  ({row['note']})" if row["note"] and row["pass"] is not None else ""
        lines.append(f"{row['gate']:72} {row['threshold']:>14} {value}  {verdict}{note}")
    return "\n".join(lines)


GATES_TITLE = "issue 21 gates (noise: the baseline's own spread over this run's rounds)"


def main(argv: list[str]) -> int:
    """Print the split and the gates of a saved run: the gates need nothing but its JSON."""
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "latest.json"
    report = json.loads(path.read_text())
    if report.get("split"):
        print(split_tables(report["split"]) + "\n")
    print(GATES_TITLE + "\n" + gates_table(gates(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
