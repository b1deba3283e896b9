"""What `bench live --backend vllm` derives from its runs: plain-vLLM baseline / Autellix
ratios per rate, sustainable rates with the plain baselines as baselines, and the repeat summary.

Kept apart from the runs so `autellix bench report` can recompute it on an old results.json
without starting anything.
"""

from __future__ import annotations

from typing import Any

from autellix.bench import repeats
from autellix.bench.compare import SATURATION_FACTOR
from autellix.bench.plain_vllm import PLAIN_POLICIES, is_plain
from autellix.sim.metrics import sustainable

SERVED_FRACTION = 0.9  # a baseline completing < 90% of the offered programs/s is saturated


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate: each plain baseline / each Autellix policy (> 1: Autellix better)."""
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    autellix = [p for p in policies if not is_plain(p)]
    lightest: dict[str, float] = {}
    for r in sorted(runs, key=lambda r: r["rate"]):
        lightest.setdefault(r["policy"], r["avg_latency_per_token_s"])
    out = []
    for rate in sorted({r["rate"] for r in runs}):
        at = {r["policy"]: r for r in runs if r["rate"] == rate}
        for base in PLAIN_POLICIES:
            for pol in autellix:
                if base not in at or pol not in at:
                    continue
                b, p = at[base], at[pol]
                growth = b["avg_latency_per_token_s"] / lightest[base] if lightest[base] else None
                # served / offered programs per second: below 90% the baseline cannot keep up
                served = b["throughput_programs_per_s"] / rate if rate else None
                out.append(
                    {
                        "rate": rate,
                        "baseline": base,
                        "policy": pol,
                        "baseline_saturated": bool(
                            (growth and growth >= SATURATION_FACTOR)
                            or (served is not None and served < SERVED_FRACTION)
                        ),
                        "baseline_latency_per_token_growth": growth,
                        "baseline_served_fraction": served,
                        "latency_per_token_ratio": b["avg_latency_per_token_s"]
                        / p["avg_latency_per_token_s"],
                        "avg_latency_ratio": b["avg_latency_s"] / p["avg_latency_s"],
                        "p95_latency_ratio": b["p95_latency_s"] / p["p95_latency_s"],
                        "p99_latency_ratio": b["p99_latency_s"] / p["p99_latency_s"],
                        "throughput_ratio": p["throughput_programs_per_s"]
                        / b["throughput_programs_per_s"],
                    }
                )
    return out


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute what derives from `runs` (`bench report` calls it on old results too)."""
    runs = repeats.mean_runs(payload["runs"])  # one record per (rate, policy)
    sust = sustainable(runs, baselines=PLAIN_POLICIES) if runs else {}
    equal: dict[str, Any] = {}
    for pol, entry in (sust.get("policies") or {}).items():
        if is_plain(pol):
            continue
        for m, e in entry.items():
            for base, v in e.get("ratio_to", {}).items():
                equal.setdefault(f"{pol}/{base}", {})[m] = v
    payload.update(
        {
            "comparisons": comparisons(runs),
            "sustainable": sust,
            "throughput_at_equal_latency": equal,
            "repeat_summary": repeats.repeat_summary(payload["runs"], PLAIN_POLICIES, is_plain),
        }
    )
    return payload
