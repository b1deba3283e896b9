"""Metrics of simulated runs and the paper's "throughput at the same latency".

Everything here is computed from `SimRun`/`ProgramOutcome` alone (no simulator internals), so the
live benchmark can reuse it. The paper's metric is a program's latency divided by its output
tokens (a multi-threaded program: end-to-end time over all its threads' tokens), averaged over
programs, with P95/P99 beside it.

Sustainable rate: with L* = m x (the lowest average latency per token of any policy at the
lightest swept rate), a policy's sustainable rate is where its average latency per token first
rises above L*, interpolated linearly between the two swept rates around the crossing. A policy
still under L* at the highest swept rate gives only a lower bound (`bound: "lower"`); one already
above L* at the lightest rate gives an upper bound (`bound: "upper"`, rate = the lightest rate).

Absolute SLOs (`sustainable_absolute`): the same crossing at fixed latencies per token in seconds.
Why both: an engine's step grows with its batch (the A100 profile's step goes from 10.5 ms at one
sequence to ~50 ms at 256), so L* = m x the light-load latency is reached at m = 2 (often m = 5)
while no call waits yet, where every work-conserving policy ties. A fixed SLO says what a user
would state ("at most 0.1 s per token") and is comparable across workloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from autellix.bench.reporting import pct as _pct
from autellix.sim.results import ProgramOutcome, SimRun

LEVELS = (2, 5, 10)
ABSOLUTE_SLOS = (0.05, 0.1, 0.2, 0.5)  # s/token
BASELINES = ("fcfs-nocache", "fcfs", "mlfq", "srpt")
METRIC = "avg_latency_per_token_s"


def outcome_metrics(outcomes: Sequence[ProgramOutcome]) -> dict[str, float]:
    """Latency and latency-per-token statistics of a set of programs, plus where time went."""
    if not outcomes:
        return {"programs": 0}
    lat = np.array([o.latency_s for o in outcomes])
    lpt = np.array([o.latency_per_token_s for o in outcomes])
    wait = np.array([o.waiting_s for o in outcomes])
    exe = np.array([o.executing_s for o in outcomes])
    return {
        "programs": len(outcomes),
        "avg_latency_s": float(lat.mean()),
        "p50_latency_s": _pct(lat, 50),
        "p95_latency_s": _pct(lat, 95),
        "p99_latency_s": _pct(lat, 99),
        "max_latency_s": float(lat.max()),
        "avg_latency_per_token_s": float(lpt.mean()),
        "p50_latency_per_token_s": _pct(lpt, 50),
        "p95_latency_per_token_s": _pct(lpt, 95),
        "p99_latency_per_token_s": _pct(lpt, 99),
        # summed over a program's calls (threads overlap, so they can exceed its latency)
        "avg_waiting_s": float(wait.mean()),
        "avg_executing_s": float(exe.mean()),
        "waiting_fraction": float(wait.sum() / max(1e-12, wait.sum() + exe.sum())),
        "program_preemptions": int(sum(o.preemptions for o in outcomes)),
        "cache_hit_rate": float(
            sum(o.cached_prompt_tokens for o in outcomes)
            / max(1, sum(o.prompt_tokens for o in outcomes))
        ),
    }


def run_record(run: SimRun, *, workload: str, rate: float, **context: Any) -> dict[str, Any]:
    """One `runs` entry of results.json: the contract keys first, then the explanatory ones."""
    outs = run.programs
    rec: dict[str, Any] = {"workload": workload, "policy": run.policy, "rate": float(rate)}
    m = outcome_metrics(outs)
    rec.update(m)
    if outs:
        first = min(o.arrival_s for o in outs)
        last = max(o.finish_s for o in outs)
        rec["throughput_programs_per_s"] = len(outs) / max(1e-12, last - first)
        rec["output_tokens"] = int(sum(o.output_tokens for o in outs))
        rec["calls"] = int(sum(o.calls for o in outs))
    else:
        rec["throughput_programs_per_s"] = 0.0
    rec["preemptions"] = int(run.preemptions)
    rec["engine_utilization"] = [float(u) for u in run.engine_utilization]
    rec["cache_hit_rate"] = float(run.cache_hit_rate)
    rec["makespan_s"] = float(run.makespan_s)
    kinds = sorted({o.kind for o in outs})
    if len(kinds) > 1:
        rec["per_kind"] = {k: outcome_metrics([o for o in outs if o.kind == k]) for k in kinds}
    rec["stats"] = {k: float(v) for k, v in run.stats.items()}
    rec.update(context)
    rec["simulated"] = True
    return rec


def crossing_rate(points: Iterable[tuple[float, float]], slo: float) -> tuple[float, str]:
    """(rate, bound) where the latency curve first exceeds `slo`; see the module docstring.

    bound: "exact" (interpolated crossing), "lower" (never crossed: highest rate swept),
    "upper" (over the SLO already at the lightest rate).
    """
    pts = sorted(points)
    if not pts:
        raise ValueError("no points")
    r0, v0 = pts[0]
    if v0 > slo:
        return r0, "upper"
    for r1, v1 in pts[1:]:
        if v1 > slo:
            return r0 + (slo - v0) / (v1 - v0) * (r1 - r0), "exact"
        r0, v0 = r1, v1
    return r0, "lower"


def _ratio_bound(num: str, den: str) -> str:
    """Bound of num/den given the bounds of numerator and denominator."""
    if num == den == "exact":
        return "exact"
    up = {"exact": 0, "lower": 1, "upper": -1}  # direction each side may move
    n, d = up[num], up[den]
    if n >= 0 and d <= 0:
        return "lower"  # numerator may be larger or denominator smaller: true ratio is higher
    if n <= 0 and d >= 0:
        return "upper"
    return "unknown"


def sustainable(
    runs: Sequence[dict[str, Any]],
    levels: Sequence[float] = LEVELS,
    baselines: Sequence[str] = BASELINES,
    metric: str = METRIC,
) -> dict[str, Any]:
    """results.json's `sustainable` block for the runs of one workload (see module docstring)."""
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_policy.setdefault(r["policy"], []).append((float(r["rate"]), float(r[metric])))
    if not by_policy:
        return {}
    lightest = min(rate for pts in by_policy.values() for rate, _ in pts)
    base = min(v for pts in by_policy.values() for rate, v in pts if rate == lightest)
    out: dict[str, Any] = {
        "metric": metric,
        "lightest_rate": lightest,
        "reference_latency_per_token_s": base,
        "slo_s_per_token": {str(m): m * base for m in levels},
        "policies": _crossings(by_policy, {str(m): m * base for m in levels}, baselines),
    }
    return out


def sustainable_absolute(
    runs: Sequence[dict[str, Any]],
    slos: Sequence[float] = ABSOLUTE_SLOS,
    baselines: Sequence[str] = BASELINES,
    metric: str = METRIC,
) -> dict[str, Any]:
    """Sustainable rates at fixed SLOs (s/token), keyed by the SLO as a string (see module
    docstring); same shape as `sustainable`'s `policies`."""
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_policy.setdefault(r["policy"], []).append((float(r["rate"]), float(r[metric])))
    if not by_policy:
        return {}
    return {
        "metric": metric,
        "slo_s_per_token": {f"{x:g}": float(x) for x in slos},
        "policies": _crossings(by_policy, {f"{x:g}": float(x) for x in slos}, baselines),
    }


def _crossings(
    by_policy: dict[str, list[tuple[float, float]]],
    slos: dict[str, float],
    baselines: Sequence[str],
) -> dict[str, Any]:
    """Per policy and SLO key: crossing rate, its bound and its ratio to each baseline."""
    found = {
        pol: {k: crossing_rate(pts, v) for k, v in slos.items()} for pol, pts in by_policy.items()
    }
    policies: dict[str, Any] = {}
    for pol in by_policy:
        entry: dict[str, Any] = {}
        for key in slos:
            rate, bound = found[pol][key]
            ratios: dict[str, Any] = {}
            for b in baselines:
                if b == pol or b not in found:
                    continue
                brate, bbound = found[b][key]
                ratios[b] = {
                    "ratio": rate / brate if brate > 0 else float("inf"),
                    "bound": _ratio_bound(bound, bbound),
                }
            entry[key] = {
                "rate": rate,
                "bound": bound,
                "lower_bound": bound == "lower",
                "ratio_to": ratios,
            }
        policies[pol] = entry
    return policies


def all_crossed(sust: dict[str, Any], level: float = max(LEVELS)) -> bool:
    """Whether every policy crossed L* at `level` (no lower bounds left)."""
    return all(not e[str(level)]["lower_bound"] for e in sust.get("policies", {}).values())


def any_above_at_lightest(sust: dict[str, Any], level: float = min(LEVELS)) -> bool:
    """Whether some policy is over L* already at the lightest rate (sweep must go lower)."""
    return any(e[str(level)]["bound"] == "upper" for e in sust.get("policies", {}).values())


def interpolate_at(
    runs: Sequence[dict[str, Any]], rate: float, key: str = "avg_latency_s"
) -> dict[str, float]:
    """Per policy, `key` interpolated linearly in rate at `rate` (clamped to the swept range)."""
    by_policy: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_policy.setdefault(r["policy"], []).append((float(r["rate"]), float(r[key])))
    out = {}
    for pol, pts in by_policy.items():
        pts.sort()
        xs, ys = zip(*pts, strict=True)
        out[pol] = float(np.interp(rate, xs, ys))
    return out


def at_load(
    runs: Sequence[dict[str, Any]], capacity: float, load: float = 0.8, oracle: str = "srpt"
) -> dict[str, Any]:
    """Average and p99 program latency at `load` x capacity; each policy's ratio to the oracle."""
    rate = load * capacity
    avg = interpolate_at(runs, rate, "avg_latency_s")
    p99 = interpolate_at(runs, rate, "p99_latency_s")
    lpt = interpolate_at(runs, rate, METRIC)
    out: dict[str, Any] = {
        "load": load,
        "rate": rate,
        "capacity_programs_per_s": capacity,
        "avg_latency_s": avg,
        "p99_latency_s": p99,
        "avg_latency_per_token_s": lpt,
    }
    if oracle in avg and avg[oracle] > 0:
        out[f"avg_latency_ratio_to_{oracle}"] = {p: v / avg[oracle] for p, v in avg.items()}
    return out
