"""`bench live` end to end: probe, pick rates, run every (rate, policy), summarize.

Order: rate-major (every policy at one rate, then the next rate), so a change in the machine's
load during the benchmark (two cores shared with other work) hits the policies being compared
at a rate alike. Every run gets a fresh stack (`bench.stack`); the grid itself and the
results.json frame are shared with the vLLM benchmark (`bench.sweep`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from autellix.bench.compare import live_vs_sim, policy_ratios
from autellix.bench.live import LiveConfig, live_run
from autellix.bench.probe import ProbeResult, probe_stack
from autellix.bench.stack import Infra, run_stack
from autellix.bench.sweep import DEFAULT_LOADS, Callbacks, Grid
from autellix.client import Client
from autellix.sim.metrics import at_load, sustainable
from autellix.sim.sweep import analytic_capacity
from autellix.workloads.loader import Workload

BANNER = "LIVE stack (frontend, schedulers, NATS, Postgres) + SIMULATED engines"


async def probe_infra(infra: Infra, cfg: LiveConfig) -> ProbeResult:
    """The probe on a fresh FCFS stack (no policy: it measures the stack and engines)."""
    async with run_stack(
        infra,
        policy="fcfs",
        timing=cfg.timing,
        engines=cfg.engines,
        schedulers=cfg.schedulers,
        log_dir=cfg.log_dir,
    ) as rs:
        async with Client(rs.settings.nats_url, namespace=rs.settings.namespace) as client:
            return await probe_stack(client, cfg.timing, cfg.engines)


def capacity(workload: Workload, cfg: LiveConfig, probe: ProbeResult | None) -> float:
    """Programs/s the engines sustain (analytic, on the profile scaled by the measured step)."""
    scale = probe.step_scale if probe else 1.0
    return analytic_capacity(workload.programs, cfg.timing.profile(scale=scale), cfg.engines)


async def run_live_bench(
    cfg: LiveConfig,
    workload: Workload,
    *,
    rates: Sequence[float] | None = None,
    loads: Sequence[float] = DEFAULT_LOADS,
    nats_url: str | None = None,
    database_url: str | None = None,
    do_probe: bool = True,
    callbacks: Callbacks | None = None,
    meta_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the results.json payload."""
    cb = callbacks or Callbacks()
    grid = Grid(workload, cfg, rates, loads, meta_extra)
    async with Infra(nats_url, database_url) as infra:
        probe: ProbeResult | None = None
        if do_probe:
            cb.phase("probing the stack (control-plane delay, engine step time)")
            probe = await probe_infra(infra, cfg)
        grid.pick_rates(capacity(workload, cfg, probe))

        async def one(programs: list[Any], policy: str, rate: float) -> dict[str, Any]:
            return await live_run(
                infra,
                cfg,
                programs,
                policy,
                rate,
                probe=probe,
                on_program=lambda _run: cb.program_done(),
                on_started=cb.stack_ready,
            )

        await grid.run(cb, one)
        servers = infra.describe()
    specific = {
        "engines": cfg.engines,
        "engine": cfg.timing.describe(),
        "engine_profile_for_simulator": dataclasses.asdict(cfg.timing.profile()),
        "capacity_model": "analytic: engines / mean work per program at a full batch, on the "
        "sim engine's profile scaled by the probe's measured step slowdown",
        "servers": servers,
    }
    probe_d = probe.as_dict() if probe else None
    payload = grid.results(
        backend="sim", simulated=True, banner=BANNER, probe=probe_d, specific=specific
    )
    return summarize(payload)


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute everything derived from `runs`: sustainable rates, policy comparisons, live vs
    simulated agreement. `bench report` calls it too, so old results get current summaries."""
    runs = payload["runs"]
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    sust = sustainable(runs)
    base = "fcfs" if "fcfs" in policies else (policies[0] if policies else "")
    comparisons = {p: policy_ratios(runs, sust, p, base) for p in policies if p != base}
    if "atlas" in comparisons:
        comparison = comparisons["atlas"]
    else:
        comparison = comparisons[policies[-1]] if len(policies) >= 2 else None
    cap = payload.get("capacity_programs_per_s")
    payload.update(
        {
            "sustainable": sust,
            "at_load": at_load(runs, cap, 0.8) if cap and runs else None,
            "comparison": comparison,
            "comparisons": comparisons,
            "live_vs_sim": live_vs_sim(runs, "sim"),
            "live_vs_sim_cal": live_vs_sim(runs, "sim_cal"),
            "live_vs_sim_explained": live_vs_sim(runs, "sim_explained"),
        }
    )
    return payload
