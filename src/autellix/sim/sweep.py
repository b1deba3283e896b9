"""Rate sweeps: run every (policy, rate) pair of a workload, in parallel, until every policy's
latency curve crosses the SLO levels.

Why a process pool with `fork`: the simulator is pure Python and CPU-bound, so threads would not
help; forking after the workload is loaded lets every worker inherit the programs (copy-on-write)
instead of pickling ~10^5 calls per task. Each task sends back only its small `runs` record.

Capacity (programs/s) is estimated from the workload's total work and the engine profile's cost
model at a full batch (`analytic_capacity`). The default sweep is geometric from 10% to 200% of
it, extended upwards until every policy crosses the SLO levels.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autellix.sim.metrics import (
    LEVELS,
    all_crossed,
    any_above_at_lightest,
    run_record,
    sustainable,
)
from autellix.sim.results import SimRun
from autellix.workloads.arrivals import with_arrivals
from autellix.workloads.types import ProgramSpec

SimulateFn = Callable[..., SimRun]
ProgressFn = Callable[[dict[str, Any]], None]

DEFAULT_POINTS = 14
DEFAULT_LO, DEFAULT_HI = 0.1, 2.0  # x estimated capacity
EXTEND_FACTOR = 1.6
MAX_EXTENSIONS = 6  # upwards: past capacity a finite workload's latency saturates
MAX_EXTENSIONS_DOWN = 2  # downwards: a policy slow even when idle is not fixed by less load


@dataclass(slots=True)
class SweepConfig:
    """What stays fixed across the (policy, rate) grid of one workload."""

    workload: str
    policies: list[str]
    engines: int = 1
    profile: str = "cpu-tiny"
    balancer: str = "locality"
    seed: int = 0
    arrival: str = "poisson"
    burst_cv: float = 3.0
    sim_options: dict[str, Any] = field(default_factory=dict)
    jobs: int = 2
    # Named policy variants for ablations: label -> (policy name, simulate() options). A label
    # listed in `policies` runs its base policy with `sim_options` updated by these options and
    # is reported under the label.
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # the m of L* = m x light-load latency at which sustainable rates are read
    levels: tuple[float, ...] = LEVELS


@dataclass(slots=True)
class SweepResult:
    """All runs of a sweep plus what was derived from them."""

    runs: list[dict[str, Any]]
    rates: list[float]
    capacity: float
    sustainable: dict[str, Any]
    extensions: int


def _default_simulate() -> SimulateFn:
    from autellix.sim import simulate  # P's simulator; imported lazily

    return simulate


# Set in the parent before forking; read by workers (see module docstring).
_PROGRAMS: list[ProgramSpec] = []
_CFG: SweepConfig | None = None
_SIM: SimulateFn | None = None


def _run_one(policy: str, rate: float) -> dict[str, Any]:
    assert _CFG is not None and _SIM is not None
    cfg = _CFG
    t0 = time.perf_counter()
    progs = with_arrivals(_PROGRAMS, rate, cfg.seed, cfg.arrival, cfg.burst_cv)
    label = policy
    options = dict(cfg.sim_options)
    if policy in cfg.variants:
        policy, extra = cfg.variants[label]
        options.update(extra)
    options.setdefault("balancer", cfg.balancer)
    options.setdefault("engines", cfg.engines)
    run = _SIM(progs, policy=policy, profile=cfg.profile, seed=cfg.seed, **options)
    if label != policy:
        run.policy = label
    return run_record(
        run,
        workload=cfg.workload,
        rate=rate,
        engines=options["engines"],
        profile=cfg.profile,
        balancer=options["balancer"],
        arrival=cfg.arrival,
        seed=cfg.seed,
        sim_wall_s=time.perf_counter() - t0,
    )


def analytic_capacity(
    programs: Sequence[ProgramSpec], profile: Any, engines: int = 1, prefix_caching: bool = True
) -> float:
    """Programs/s the engines can complete at saturation, from the profile's cost model.

    At saturation an engine runs a full batch: B = min(max_num_seqs, KV capacity / mean decode
    context) sequences, each step costing base + B*decode_per_seq + B*ctx*decode_per_ctx_token,
    so a decoded token costs step/B. A prompt token not served from the prefix cache costs
    prefill_per_token (+ prefill_attn x the call's context). Capacity = engines / mean work per
    program. It ignores scheduling losses (bubbles, preemption, evictions), so it is an upper
    bound on what any policy sustains: sweeps go past it.
    """
    calls = [c for p in programs for c in p.calls]
    out = sum(c.output_tokens for c in calls)
    if not calls:
        return 0.0
    ctx = sum(c.output_tokens * (c.prompt_tokens + c.output_tokens / 2) for c in calls) / max(
        1, out
    )
    batch = max(1.0, min(float(profile.max_num_seqs), profile.kv_capacity_tokens / max(1.0, ctx)))
    step = (
        profile.base_s
        + batch * profile.decode_per_seq_s
        + batch * ctx * profile.decode_per_ctx_token_s
    )
    per_token = step / batch
    work = out * per_token
    for c in calls:
        new = c.prompt_tokens - (c.prefix_tokens if prefix_caching else 0)
        work += new * (profile.prefill_per_token_s + profile.prefill_attn_s * c.prompt_tokens)
    return engines * len(programs) / work


def estimate_capacity(
    programs: Sequence[ProgramSpec], cfg: SweepConfig, simulate: SimulateFn | None = None
) -> float:
    """Programs/s at saturation for this workload and engine profile (see `analytic_capacity`).

    Without a loadable profile (a custom `simulate`), falls back to simulating the workload
    queued at t = 0 under fcfs: programs / makespan. That fallback underestimates badly when a
    few long programs (LATS) make the tail of the makespan, which is why it is not the default.
    """
    try:
        from autellix.sim import load_profile

        prof = load_profile(cfg.profile)
        overrides = {k: v for k, v in cfg.sim_options.items() if hasattr(prof, k)}
        if overrides:
            prof = prof.replace(**overrides)
    except (ImportError, ValueError, OSError):
        prof = None
    if prof is not None and simulate is None:
        return analytic_capacity(programs, prof, cfg.engines)
    sim = simulate or _default_simulate()
    policy = "fcfs" if "fcfs" in cfg.policies or not cfg.policies else cfg.policies[0]
    progs = [dataclasses.replace(p, arrival_s=0.0) for p in programs]
    run = sim(
        progs,
        policy=policy,
        engines=cfg.engines,
        profile=cfg.profile,
        balancer=cfg.balancer,
        seed=cfg.seed,
        **cfg.sim_options,
    )
    return len(progs) / max(1e-9, run.makespan_s)


def geometric_rates(
    capacity: float, points: int = DEFAULT_POINTS, lo: float = DEFAULT_LO, hi: float = DEFAULT_HI
) -> list[float]:
    """`points` rates spaced geometrically from lo x capacity to hi x capacity (4 significant
    digits, so they read well in tables)."""
    return [float(f"{r:.4g}") for r in np.geomspace(lo * capacity, hi * capacity, points)]


class Runner:
    """Runs (policy, rate) grids for one workload, inline or on a forked process pool."""

    def __init__(
        self,
        programs: list[ProgramSpec],
        cfg: SweepConfig,
        simulate: SimulateFn | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        global _PROGRAMS, _CFG, _SIM
        _PROGRAMS, _CFG, _SIM = programs, cfg, simulate or _default_simulate()
        jobs = max(1, min(cfg.jobs, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            self._pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"))

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def grid(self, rates: Sequence[float], policies: Sequence[str] | None = None) -> list[dict]:
        """One record per (policy, rate), in (rate, policy) order whatever order they finish."""
        tasks = [(p, r) for r in rates for p in (policies or self.cfg.policies)]
        results: dict[tuple[str, float], dict[str, Any]] = {}
        if self._pool is None:
            for p, r in tasks:
                results[(p, r)] = rec = _run_one(p, r)
                if self.progress:
                    self.progress(rec)
        else:
            futs = {self._pool.submit(_run_one, p, r): (p, r) for p, r in tasks}
            for f in as_completed(futs):
                results[futs[f]] = rec = f.result()
                if self.progress:
                    self.progress(rec)
        return [results[t] for t in tasks]


def run_sweep(
    programs: list[ProgramSpec],
    cfg: SweepConfig,
    rates: Sequence[float] | None = None,
    *,
    extend: bool = True,
    capacity: float | None = None,
    simulate: SimulateFn | None = None,
    progress: ProgressFn | None = None,
    on_rates: Callable[[list[float]], None] | None = None,
) -> SweepResult:
    """Sweep `rates` (default: geometric around the estimated capacity) for every policy; with
    `extend`, add rates above (below) the range until every policy crosses the highest (lowest)
    SLO level, at most `MAX_EXTENSIONS` times.

    on_rates: told each batch of rates before it runs (for a progress bar's total).
    """
    cap = capacity if capacity is not None else estimate_capacity(programs, cfg, simulate)
    todo = sorted(set(rates)) if rates else geometric_rates(cap)
    done: list[float] = []
    runs: list[dict[str, Any]] = []
    ext = down = 0
    with Runner(programs, cfg, simulate, progress) as runner:
        while True:
            if on_rates:
                on_rates(todo)
            runs.extend(runner.grid(todo))
            done = sorted(set(done) | set(todo))
            sust = sustainable(runs, cfg.levels)
            if not extend or ext >= MAX_EXTENSIONS:
                break
            todo = []
            if not all_crossed(sust, max(cfg.levels)):
                todo.append(float(f"{done[-1] * EXTEND_FACTOR:.4g}"))
            if any_above_at_lightest(sust, min(cfg.levels)) and down < MAX_EXTENSIONS_DOWN:
                todo.append(float(f"{done[0] / EXTEND_FACTOR:.4g}"))
                down += 1
            if not todo:
                break
            ext += 1
    runs.sort(key=lambda r: (r["rate"], cfg.policies.index(r["policy"])))
    return SweepResult(runs, done, cap, sustainable(runs, cfg.levels), ext)
