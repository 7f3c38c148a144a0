"""Summaries, the printed tables, the JSON file and the PNG plot of a benchmark run."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

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
        ("track_memory", "LayerSync track(), in-memory transport"),
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
    if "request_path" in sender:
        r = sender["request_path"]
        rows.append(
            "request path (ASGI, in-process, thread CPU):  "
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


# -- issue 12's targets ------------------------------------------------------------------------
def _paired_over_reference(report: dict[str, Any]) -> float | None:
    """Median over rounds of LayerSync's throughput / the reference layer's, same round."""
    variants = report["variants"]
    if "asgi-layersync" not in variants or "asgi-reference" not in variants:
        return None
    ours = {r["round"]: r["rps"] for r in variants["asgi-layersync"]["runs"]}
    ref = {r["round"]: r["rps"] for r in variants["asgi-reference"]["runs"]}
    ratios = [ours[n] / ref[n] for n in ours if ref.get(n)]
    return statistics.median(ratios) if ratios else None


def _get(tree: dict[str, Any], *keys: str) -> float | None:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _hub_trouble(report: dict[str, Any], variant: str) -> float | None:
    """p99 of a hub-down/hanging variant over the healthy paired one (1.0: unchanged)."""
    bad = _get(report["variants"], variant, "p99_ms_median")
    good = _get(report["variants"], "asgi-layersync", "p99_ms_median")
    return bad / good if bad is not None and good else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 12 with the measured value; ``met`` is None when not measured."""
    v, s = report["variants"], report.get("sender", {})
    rows: list[tuple[str, float | None, str, float]] = [
        (
            "paired request path over unmatched, in-process (us)",
            _get(s, "request_path", "paired_minus_unmatched_us"),
            "<=",
            10,
        ),
        (
            "WSGI paired request path over unmatched, in-process (us)",
            _get(s, "request_path", "wsgi_paired_minus_unmatched_us"),
            "<=",
            10,
        ),
        (
            "server CPU per paired request over bare, delivery included (us)",
            _get(v, "asgi-layersync", "extra_cpu_us_per_req_median"),
            "<=",
            30,
        ),
        ("paired throughput / reference layer's, same round", _paired_over_reference(report), ">=", 1.0),
        ("track() median, in-memory transport (us)", _get(s, "track_memory", "median_us"), "<=", 5),
        ("track() median, HTTP to the sink (us)", _get(s, "track_http", "median_us"), "<=", 5),
        ("sender delivery (events/s per process)", _get(s, "deliver", "events_per_s"), ">=", 50_000),
        ("unmatched request over bare, in-process (us)", _get(s, "request_path", "unmatched_minus_bare_us"), "<=", 2),
        (
            "unmatched request, server CPU over bare (us)",
            _get(v, "asgi-layersync-unmatched", "extra_cpu_us_per_req_median"),
            "<=",
            2,
        ),
        ("hub down: throughput / healthy paired", _ratio(v, "asgi-layersync-hub-down"), ">=", 0.95),
        ("hub hanging: throughput / healthy paired", _ratio(v, "asgi-layersync-hub-hang"), ">=", 0.95),
        ("hub down: p99 / healthy paired", _hub_trouble(report, "asgi-layersync-hub-down"), "<=", 1.10),
        ("hub hanging: p99 / healthy paired", _hub_trouble(report, "asgi-layersync-hub-hang"), "<=", 1.10),
    ]
    out = []
    for name, value, op, bound in rows:
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": name, "value": value, "bound": f"{op} {bound:g}", "met": met})
    return out


def _ratio(variants: dict[str, Any], name: str) -> float | None:
    bad = _get(variants, name, "ratio_median")
    good = _get(variants, "asgi-layersync", "ratio_median")
    return bad / good if bad is not None and good else None


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        verdict = "not measured" if row["met"] is None else ("met" if row["met"] else "MISSED")
        lines.append(f"{row['target']:64} {_fmt(row['value'], '10.2f')} {row['bound']:>10}  {verdict}")
    return "\n".join(lines)
