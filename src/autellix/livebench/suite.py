"""`bench live` end to end: probe, pick rates, run every (rate, policy), summarize.

Order: rate-major (every policy at one rate, then the next rate), so a change in the machine's
load during the benchmark (two cores shared with other work) hits the policies being compared
at a rate alike. Every run gets a fresh stack (see `livebench.stack`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autellix.client import Client
from autellix.livebench.compare import live_vs_sim, policy_ratios
from autellix.livebench.live import LiveConfig, live_run
from autellix.livebench.probe import ProbeResult, probe_stack
from autellix.livebench.repeats import rotated
from autellix.livebench.stack import Infra, run_stack
from autellix.sim.metrics import at_load, sustainable
from autellix.sim.sweep import analytic_capacity
from autellix.workloads.arrivals import with_arrivals
from autellix.workloads.loader import Workload

DEFAULT_LOADS = (0.3, 0.8, 1.2)


@dataclass
class Callbacks:
    """Progress hooks (a rich progress bar in the CLI; nothing in tests)."""

    phase: Callable[[str], None] = lambda _msg: None
    run_start: Callable[[str, float, int], None] = lambda _p, _r, _n: None
    stack_ready: Callable[[], None] = lambda: None
    program_done: Callable[[], None] = lambda: None
    run_done: Callable[[dict[str, Any]], None] = lambda _rec: None
    run_failed: Callable[[str, float, BaseException], None] = lambda _p, _r, _e: None
    checkpoint: Callable[[list[dict[str, Any]]], None] = lambda _runs: None


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


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


def rates_for(cap: float, loads: Sequence[float] = DEFAULT_LOADS) -> list[float]:
    return [float(f"{f * cap:.4g}") for f in loads]


async def sweep(
    workload: Workload,
    cfg: Any,
    rate_list: Sequence[float],
    cap: float | None,
    cb: Callbacks,
    run_one: Callable[[list[Any], str, float], Awaitable[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (rate, policy) run, rate-major (so a drift in the machine's load hits the policies
    compared at one rate alike), with the same arrivals for every policy at a rate. `cfg` has
    `policies`, `seed`, `arrival`, `burst_cv` and maybe `repeats`: the policies of a rate then
    run that many times, each repeat in a rotated order (`repeats.rotated`), and every record
    says which repeat it is. One broken run is recorded, not fatal."""
    runs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    n_repeats = max(1, cfg.repeats)
    for rate in rate_list:
        programs = with_arrivals(workload.programs, rate, cfg.seed, cfg.arrival, cfg.burst_cv)
        for repeat in range(n_repeats):
            for policy in rotated(cfg.policies, repeat):
                cb.run_start(policy, rate, len(programs))
                try:
                    rec = await run_one(programs, policy, rate)
                except Exception as exc:  # one broken run must not lose the others
                    failed.append(
                        {
                            "policy": policy,
                            "rate": rate,
                            "repeat": repeat,
                            "error": repr(exc)[:2000],
                        }
                    )
                    cb.run_failed(policy, rate, exc)
                    continue
                rec["load"] = rate / cap if cap else None
                if n_repeats > 1:
                    rec["repeat"] = repeat
                runs.append(rec)
                cb.run_done(rec)
                cb.checkpoint(runs)
    return runs, failed


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
    t_start = time.perf_counter()
    load_start = _load()
    async with Infra(nats_url, database_url) as infra:
        probe: ProbeResult | None = None
        if do_probe:
            cb.phase("probing the stack (control-plane delay, engine step time)")
            probe = await probe_infra(infra, cfg)
        cap = capacity(workload, cfg, probe)
        rate_list = sorted(set(rates)) if rates else rates_for(cap, loads)

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

        runs, failed = await sweep(workload, cfg, rate_list, cap, cb, one)
        infra_desc = infra.describe()
    runs.sort(key=lambda r: (r["rate"], cfg.policies.index(r["policy"])))
    meta = {
        "workload": workload.name,
        "programs": len(workload.programs),
        "engines": cfg.engines,
        "schedulers": cfg.schedulers,
        "backend": "sim",
        "engine": cfg.timing.describe(),
        "engine_profile_for_simulator": dataclasses.asdict(cfg.timing.profile()),
        "seed": cfg.seed,
        "arrival": cfg.arrival,
        "burst_cv": cfg.burst_cv if cfg.arrival == "bursty" else None,
        "policies": cfg.policies,
        "sources": workload.sources,
        "synthetic": workload.synthetic,
        "tokens": workload.tokens,
        "workload_stats": workload.stats(),
        "capacity_model": "analytic: engines / mean work per program at a full batch, on the "
        "sim engine's profile scaled by the probe's measured step slowdown",
        "loads": list(loads) if not rates else None,
        "servers": infra_desc,
        "machine": _machine(),
        "cpus": os.cpu_count(),
        "load_avg_start": load_start,
        "load_avg_end": _load(),
        "wall_s": time.perf_counter() - t_start,
        "command": " ".join(sys.argv),
        **(meta_extra or {}),
    }
    payload = {
        "simulated": True,
        "live": True,
        "backend": "sim",
        "banner": "LIVE stack (frontend, schedulers, NATS, Postgres) + SIMULATED engines",
        "meta": meta,
        "probe": probe.as_dict() if probe else None,
        "capacity_programs_per_s": cap,
        "rates": rate_list,
        "runs": runs,
        "failed_runs": failed,
    }
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
