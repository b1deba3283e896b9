"""SIMULATED fairness run of bench/sim/fairness/README.md: two tenants, `heavy` offering 10x its
fair share (equal weights: half the capacity each) and `light` 0.4x capacity (below its share);
light's average program latency with heavy beside it, with and without the fair share, against
light running alone (the same programs and arrival times, heavy's removed). Writes results.json,
results.md and results.png next to this file.

    python bench/sim/fairness/run.py [--programs 1000] [--seeds 7,11] [--workloads sharegpt,mixed]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.progress import Progress

from autellix.sim import load_profile, simulate
from autellix.sim.sweep import analytic_capacity
from autellix.sim.tenants import parse_shares, tenant_of
from autellix.workloads import load_workload
from autellix.workloads.arrivals import with_arrivals

HEAVY_X_SHARE, LIGHT_X_CAPACITY = 10.0, 0.4
GOAL = 1.2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--seeds", default="7,11")
    ap.add_argument("--workloads", default="sharegpt,mixed")
    ap.add_argument("--policies", default="fcfs,gittins")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    heavy = HEAVY_X_SHARE * 0.5  # x capacity: 10x its half share
    spec = f"heavy:{heavy},light:{LIGHT_X_CAPACITY}"
    shares = parse_shares(spec)
    prof = load_profile("cpu-tiny")
    rows = []
    cases = [
        (w, int(s), p)
        for w in a.workloads.split(",")
        for s in a.seeds.split(",")
        for p in a.policies.split(",")
    ]
    with Progress() as bar:
        task = bar.add_task("SIMULATED fairness", total=len(cases) * 3)
        for wl, seed, pol in cases:
            progs = load_workload(wl, a.programs, seed).programs
            cap = analytic_capacity(progs, prof)
            rate = cap * (heavy + LIGHT_X_CAPACITY)
            timed = with_arrivals(progs, rate, seed, "poisson", 3.0)
            light_ids = {
                p.program_id for p in timed if tenant_of(p.program_id, shares, seed) == "light"
            }
            alone = [p for p in timed if p.program_id in light_ids]
            res = {}
            for label, ps, opts in (
                ("alone", alone, {}),
                ("shared", timed, {"tenants": spec}),
                ("fair-share", timed, {"tenants": spec, "tenant_weights": "heavy=1,light=1"}),
            ):
                bar.update(task, description=f"SIMULATED {wl} s{seed} {pol} {label}")
                t0 = time.perf_counter()
                run = simulate(ps, policy=pol, seed=seed, **opts)
                lat = [o.latency_s for o in run.programs if o.program_id in light_ids]
                res[label] = {
                    "light_avg_latency_s": sum(lat) / len(lat),
                    "light_programs": len(lat),
                    "wall_s": time.perf_counter() - t0,
                }
                bar.advance(task)
            base = res["alone"]["light_avg_latency_s"]
            for label in ("shared", "fair-share"):
                res[label]["x_alone"] = res[label]["light_avg_latency_s"] / base
            rows.append(
                {
                    "workload": wl,
                    "seed": seed,
                    "policy": pol,
                    "rate": rate,
                    "capacity": cap,
                    **res,
                    "met": res["fair-share"]["x_alone"] <= GOAL,
                }
            )
    payload = {
        "simulated": True,
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "tenants": spec,
        "weights": "heavy=1,light=1",
        "goal_x_alone": GOAL,
        "rows": rows,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(payload, indent=1))
    md = [
        "# Two tenants, one offering 10x its share (SIMULATED)",
        "",
        f"`{payload['command']}` ({payload['date']}); tenants `{spec}` (x capacity), "
        "weights equal. Light's average program latency (s) and its ratio to running alone.",
        "",
        "| workload | seed | policy | light programs | alone | shared, no fair share | fair share "
        "| goal <= 1.2x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['workload']} | {r['seed']} | {r['policy']} | {r['alone']['light_programs']} "
            f"| {r['alone']['light_avg_latency_s']:.1f} "
            f"| {r['shared']['light_avg_latency_s']:.1f} ({r['shared']['x_alone']:.2f}x) "
            f"| {r['fair-share']['light_avg_latency_s']:.1f} ({r['fair-share']['x_alone']:.2f}x) "
            f"| {'met' if r['met'] else 'missed'} |"
        )
    (a.out / "results.md").write_text("\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{r['workload']} s{r['seed']} {r['policy']}" for r in rows]
    xs = range(len(rows))
    ax.bar(
        [x - 0.2 for x in xs], [r["shared"]["x_alone"] for r in rows], 0.4, label="no fair share"
    )
    ax.bar(
        [x + 0.2 for x in xs], [r["fair-share"]["x_alone"] for r in rows], 0.4, label="fair share"
    )
    ax.axhline(GOAL, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, rotation=20, fontsize=7)
    ax.set_ylabel("light's avg program latency / alone")
    ax.set_title("Tenant fair share, heavy at 10x its share (SIMULATED)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "results.png", dpi=110)


if __name__ == "__main__":
    main()
