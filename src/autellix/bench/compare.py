"""Derived summaries of live runs: live vs simulated agreement, and policy A vs policy B ratios.

Both are computed from the `runs` records alone, so they can be recomputed from a results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

AGREEMENT_TOLERANCE = 0.20  # issue 5: live and simulated average program latency within 20%
SATURATION_FACTOR = 2.0  # a policy is "saturated" once its latency/token doubled vs light load


def live_vs_sim(runs: Sequence[dict[str, Any]], prefix: str = "sim") -> dict[str, Any]:
    """How far the live average program latency is from the simulator's, per run and overall."""
    rows = []
    for r in runs:
        sim = r.get(f"{prefix}_avg_latency_s")
        if not sim:
            continue
        ratio = r["avg_latency_s"] / sim
        rows.append(
            {
                "policy": r["policy"],
                "rate": r["rate"],
                "live_avg_latency_s": r["avg_latency_s"],
                f"{prefix}_avg_latency_s": sim,
                "live_over_sim": ratio,
                "within_tolerance": abs(ratio - 1.0) <= AGREEMENT_TOLERANCE,
                "live_p99_latency_s": r["p99_latency_s"],
                f"{prefix}_p99_latency_s": r.get(f"{prefix}_p99_latency_s"),
            }
        )
    if not rows:
        return {"runs": []}
    errs = [abs(x["live_over_sim"] - 1.0) for x in rows]
    return {
        "tolerance": AGREEMENT_TOLERANCE,
        "runs": rows,
        "within_tolerance": sum(x["within_tolerance"] for x in rows),
        "total": len(rows),
        "all_within_tolerance": all(x["within_tolerance"] for x in rows),
        "max_abs_error": max(errs),
        "mean_abs_error": sum(errs) / len(errs),
        "mean_live_over_sim": sum(x["live_over_sim"] for x in rows) / len(rows),
    }


def _ratio(num: dict[str, Any], den: dict[str, Any], key: str) -> float | None:
    n, d = num.get(key), den.get(key)
    return n / d if n and d else None


def _lightest(runs: Sequence[dict[str, Any]], policy: str, key: str) -> float | None:
    pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == policy)
    return pts[0][1] if pts else None


def policy_ratios(
    runs: Sequence[dict[str, Any]],
    sustainable: dict[str, Any],
    policy: str = "atlas",
    baseline: str = "fcfs",
) -> dict[str, Any] | None:
    """`baseline` / `policy` for latency per token, average and p99 program latency at every
    rate both ran (> 1: `policy` is better), where the baseline is saturated, and the ratio of
    sustainable rates (throughput at equal latency)."""
    by = {(r["policy"], r["rate"]): r for r in runs}
    rates = sorted({r for (p, r) in by if p == policy} & {r for (p, r) in by if p == baseline})
    if not rates:
        return None
    base_light = _lightest(runs, baseline, "avg_latency_per_token_s") or 0.0
    per_rate = []
    for rate in rates:
        a, b = by[(policy, rate)], by[(baseline, rate)]
        saturated = b["avg_latency_per_token_s"] >= SATURATION_FACTOR * base_light
        per_rate.append(
            {
                "rate": rate,
                "baseline_saturated": saturated,
                "baseline_latency_per_token_growth": b["avg_latency_per_token_s"] / base_light
                if base_light
                else None,
                "avg_latency_per_token_ratio": b["avg_latency_per_token_s"]
                / a["avg_latency_per_token_s"],
                "p99_latency_per_token_ratio": b["p99_latency_per_token_s"]
                / a["p99_latency_per_token_s"],
                "avg_latency_ratio": b["avg_latency_s"] / a["avg_latency_s"],
                "p99_latency_ratio": b["p99_latency_s"] / a["p99_latency_s"],
                "throughput_ratio": a["throughput_programs_per_s"] / b["throughput_programs_per_s"],
                "policy_applied": bool(a.get("policy_applied", True)),
                # the simulator's prediction of the same two runs, for comparison
                "sim_avg_latency_per_token_ratio": _ratio(b, a, "sim_avg_latency_per_token_s"),
                "sim_avg_latency_ratio": _ratio(b, a, "sim_avg_latency_s"),
                "sim_p99_latency_ratio": _ratio(b, a, "sim_p99_latency_s"),
            }
        )
    saturated = [x for x in per_rate if x["baseline_saturated"]]
    headline = (saturated or per_rate)[-1]
    equal_latency = {}
    pol = sustainable.get("policies", {}).get(policy, {})
    for m, e in pol.items():
        if baseline in e.get("ratio_to", {}):
            equal_latency[m] = e["ratio_to"][baseline]
    return {
        "policy": policy,
        "baseline": baseline,
        "note": "ratios are baseline / policy for latencies (> 1: policy better), "
        "policy / baseline for throughput",
        "headline_rate": headline["rate"],
        "headline": headline,
        "per_rate": per_rate,
        "throughput_at_equal_latency": equal_latency,
    }
