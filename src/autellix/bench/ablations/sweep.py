"""Running one ablation set: its rates (fixed multiples of the estimated capacity, the same for
every variant), the sweep, and the results JSON payload with its sustainable rates.

A long set can be run in parts (`only` + `previous`): the named variants run, the others' runs
come from the set's earlier JSON, and the command lines of all parts are kept in `meta`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from autellix.bench.ablations.sets import FACTORS
from autellix.bench.reporting import command_line
from autellix.sim import load_profile, simulate
from autellix.sim.metrics import (
    ABSOLUTE_SLOS,
    outcome_metrics,
    sustainable,
    sustainable_absolute,
)
from autellix.sim.report import BANNER
from autellix.sim.sweep import SweepConfig, analytic_capacity, run_sweep
from autellix.workloads.arrivals import with_arrivals
from autellix.workloads.types import ProgramSpec


def light_p99(programs: list[ProgramSpec], profile: str, cap: float) -> float:
    """p99 program latency (s) under fcfs at 10% of capacity: the workload's own tail when
    nothing waits, the time scale for the age bounds of the `tails-*` sets."""
    run = simulate(with_arrivals(programs, 0.1 * cap, 0), policy="fcfs", profile=profile)
    return outcome_metrics(run.programs)["p99_latency_s"]


def run_set(
    name: str,
    spec: dict[str, Any],
    profile: str,
    programs: list[ProgramSpec],
    jobs: int,
    only: list[str] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one set. `only`: run just these variants and take the others' runs from `previous`
    (the same set's earlier JSON, same programs and rates), so a long set can be run in parts.
    Raises ValueError when that JSON has other programs or rates (the parts would not compare)."""
    engines = spec.get("engines", 1)
    prof = load_profile(profile)
    common = dict(spec.get("sim_options", {}))  # profile changes for every variant of the set
    if common:
        prof = prof.replace(**common)
    cap = analytic_capacity(programs, prof, engines)
    light = None
    if "age_multiples" in spec:
        # age bounds as multiples of the workload's light-load p99 program latency
        light = light_p99(programs, profile, cap)
        spec = dict(spec, variants=dict(spec["variants"]))
        for k in spec["age_multiples"]:
            age = float(f"{k * light:.3g}")
            spec["variants"][f"atlas-age{age:g}"] = ("atlas", {"age_s": age})
    factors = spec.get("factors", FACTORS)
    rates = [float(f"{f * cap:.4g}") for f in factors]
    labels = list(spec["variants"])
    todo = [lab for lab in labels if not only or lab in only]
    kept: list[dict[str, Any]] = []
    wall0, commands = 0.0, []
    if only and previous is None:
        # first part of a split set: a JSON of just these variants
        labels = todo
        spec = dict(spec, variants={k: spec["variants"][k] for k in todo})
    elif only and previous is not None:
        # complete the set: run the named variants and any the earlier JSON lacks
        have = {r["policy"] for r in previous["runs"]}
        todo = [lab for lab in labels if lab in only or lab not in have]
        meta0 = previous["meta"]
        if meta0["programs"] != len(programs) or previous["rates"] != rates:
            raise ValueError(f"{name}: earlier JSON has other programs or rates; run it whole")
        kept = [r for r in previous["runs"] if r["policy"] in labels and r["policy"] not in todo]
        wall0, commands = meta0["wall_s"], [meta0["command"]]
    cfg = SweepConfig(
        workload=spec["workload"],
        policies=todo,
        engines=engines,
        profile=profile,
        jobs=jobs,
        variants=spec["variants"],
        arrival=spec.get("arrival", "poisson"),
        burst_cv=3.0,
        sim_options=common,
    )
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run_sweep(programs, cfg, rates, extend=False, capacity=cap)
    wall = time.perf_counter() - t0 + wall0
    runs = sorted(kept + res.runs, key=lambda r: (r["rate"], labels.index(r["policy"])))
    base = [b for b in ("fcfs-nocache", "fcfs", "mlfq", "fcfs-round-robin") if b in labels]
    for ref in ("atlas", "plas", "atlas-locality"):
        if ref in labels and ref not in base:
            base.append(ref)
    return {
        "simulated": True,
        "banner": f"{BANNER} ablation (discrete-event model, not measured on engines)",
        "set": name,
        "meta": {
            "workload": spec["workload"],
            "programs": len(programs),
            "engines": engines,
            "profile": profile,
            "seed": 0,
            "arrival": cfg.arrival,
            "burst_cv": cfg.burst_cv if cfg.arrival == "bursty" else None,
            "variants": {k: [p, repr(o)] for k, (p, o) in spec["variants"].items()},
            "sim_options": {k: repr(v) for k, v in common.items()},
            "rate_factors": list(factors),
            "light_load_p99_latency_s": light,
            "load_average_start": list(load0),
            "load_average_end": list(os.getloadavg()),
            "wall_s": wall,
            "jobs": jobs,
            "command": " && ".join([*commands, command_line()]),
        },
        "capacity_programs_per_s": cap,
        "rates": res.rates,
        "runs": runs,
        "sustainable": sustainable(runs, baselines=base),
        "sustainable_absolute": sustainable_absolute(runs, ABSOLUTE_SLOS, baselines=base),
    }
