"""Repeated runs of one benchmark: pooled means, spread, and ratios paired by repeat.

Why: on the 2-core test machine one run of a saturated real-vLLM benchmark varies a lot between
repetitions (the same configuration measured 0.111-0.137 s/token in three runs; session 6 saw
vllm-priority at 0.121 and 0.091 in two), as much as the gaps the benchmark is there to show.
`bench live --repeats N` runs the whole (rate, policy) grid N times, each repeat with the
policies in a rotated order (so none always runs first or last as the host drifts), and this
module summarizes:

* `mean_runs`: one record per (rate, policy) whose metrics are the means over its repeats, for
  the ratio tables, the throughput-at-equal-latency block and the plot;
* `repeat_summary`: per (rate, policy) mean, standard deviation, min and max of the headline
  metrics, and per (rate, baseline, policy) the baseline/Autellix ratio of every repeat (runs
  of one repeat are side by side in time) next to the ratio of the means.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

#: metrics averaged over repeats (the rest of a mean record comes from the first repeat)
METRICS = (
    "avg_latency_per_token_s",
    "p50_latency_per_token_s",
    "p95_latency_per_token_s",
    "p99_latency_per_token_s",
    "avg_latency_s",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "throughput_programs_per_s",
    "cache_hit_rate",
    "preemptions",
    "failed_calls",
)
#: shown with their spread in `repeat_summary`
HEADLINE = ("avg_latency_per_token_s", "avg_latency_s", "p95_latency_s", "p99_latency_s")


def rotated(policies: Sequence[str], repeat: int) -> list[str]:
    """The run order of repeat `repeat`: the policy list rotated left by `repeat`."""
    if not policies:
        return []
    k = repeat % len(policies)
    return [*policies[k:], *policies[:k]]


def repeat_count(runs: Sequence[dict[str, Any]]) -> int:
    return 1 + max((int(r.get("repeat") or 0) for r in runs), default=0)


def _groups(runs: Sequence[dict[str, Any]]) -> dict[tuple[float, str], list[dict[str, Any]]]:
    out: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        out[(r["rate"], r["policy"])].append(r)
    return out


def mean_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (rate, policy), in first-seen order; metrics averaged over its repeats."""
    out = []
    for group in _groups(runs).values():
        if len(group) == 1:
            out.append(group[0])
            continue
        rec = dict(group[0])
        for key in METRICS:
            values = [g[key] for g in group if isinstance(g.get(key), int | float)]
            if values:
                rec[key] = statistics.fmean(values)
        rec["repeats"] = len(group)
        rec.pop("repeat", None)
        out.append(rec)
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def repeat_summary(
    runs: Sequence[dict[str, Any]], baselines: Sequence[str], is_baseline: Any
) -> dict[str, Any] | None:
    """Spread per (rate, policy) and paired ratios per (rate, baseline, policy); None for a
    benchmark run once."""
    if repeat_count(runs) < 2:
        return None
    groups = _groups(runs)
    per_policy = [
        {
            "rate": rate,
            "policy": policy,
            "repeats": len(group),
            **{k: _spread([g[k] for g in group]) for k in HEADLINE if all(k in g for g in group)},
        }
        for (rate, policy), group in groups.items()
    ]
    ratios = []
    for rate in sorted({rate for rate, _ in groups}):
        for base in baselines:
            base_runs = {int(r.get("repeat") or 0): r for r in groups.get((rate, base), [])}
            if not base_runs:
                continue
            for (r2, policy), group in groups.items():
                if r2 != rate or is_baseline(policy):
                    continue
                pairs = [
                    (base_runs[k], run)
                    for run in group
                    if (k := int(run.get("repeat") or 0)) in base_runs
                ]
                if not pairs:
                    continue
                entry: dict[str, Any] = {"rate": rate, "baseline": base, "policy": policy}
                for key in HEADLINE:
                    per = [b[key] / p[key] for b, p in pairs if p.get(key)]
                    means_b = statistics.fmean(b[key] for b, _ in pairs)
                    means_p = statistics.fmean(p[key] for _, p in pairs)
                    entry[key] = {
                        "of_means": means_b / means_p if means_p else None,
                        "per_repeat": per,
                        "wins": sum(1 for x in per if x > 1.0),
                    }
                ratios.append(entry)
    return {"repeats": repeat_count(runs), "per_policy": per_policy, "ratios": ratios}


def summary_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Markdown rows: mean ± sd (min-max) of the headline metrics per (rate, policy)."""
    header = ["rate", "policy", "repeats", "avg s/token", "avg latency s", "p99 latency s"]
    rows = []
    for e in summary["per_policy"]:
        cells = []
        for key, fmt in (
            ("avg_latency_per_token_s", "{:.4f}"),
            ("avg_latency_s", "{:.2f}"),
            ("p99_latency_s", "{:.1f}"),
        ):
            s = e.get(key)
            cells.append(
                "-"
                if s is None
                else f"{fmt.format(s['mean'])} ± {fmt.format(s['sd'])} "
                f"({fmt.format(s['min'])}-{fmt.format(s['max'])})"
            )
        rows.append([f"{e['rate']:g}", e["policy"], str(e["repeats"]), *cells])
    return header, rows


def ratio_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Markdown rows: baseline/Autellix of the means, and every repeat's own ratio."""
    header = [
        "rate",
        "baseline",
        "Autellix policy",
        "avg s/token: of means (per repeat)",
        "avg latency: of means (per repeat)",
        "p99 latency: of means (per repeat)",
    ]
    rows = []
    for e in summary["ratios"]:
        cells = []
        for key in ("avg_latency_per_token_s", "avg_latency_s", "p99_latency_s"):
            x = e.get(key) or {}
            per = ", ".join(f"{v:.2f}" for v in x.get("per_repeat", []))
            of = x.get("of_means")
            cells.append(f"{of:.2f}x ({per}; better in {x.get('wins', 0)})" if of else "-")
        rows.append([f"{e['rate']:g}", e["baseline"], e["policy"], *cells])
    return header, rows
