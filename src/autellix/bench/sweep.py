"""The (rate, policy) grid both `bench live` backends run, and the results.json frame around it.

`bench live --backend sim` (`suite`) and `--backend vllm` (`vllm_suite`) differ in what one run
is (a stack of simulated engines; plain vLLM or a stack on a real engine) and in what they
measure first, not in how the grid is walked or how the results file is framed: those live here
once, so the two results files stay comparable field by field.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autellix.bench.repeats import rotated
from autellix.bench.reporting import command_line, load_avg, machine
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


class GridConfig(Protocol):
    """What the grid needs of a benchmark's config (`LiveConfig`, `VllmBenchConfig`)."""

    policies: list[str]
    schedulers: int
    seed: int
    arrival: str
    burst_cv: float
    repeats: int


def rates_for(cap: float, loads: Sequence[float] = DEFAULT_LOADS) -> list[float]:
    """Arrival rates at the given fractions of a capacity (4 significant digits)."""
    return [float(f"{f * cap:.4g}") for f in loads]


def rate_grid(
    rates: Sequence[float] | None, cap: float | None, loads: Sequence[float]
) -> list[float]:
    """The rates to run: the given ones (sorted, distinct), else `loads` x the capacity."""
    return sorted(set(rates)) if rates else rates_for(cap or 0.0, loads)


async def sweep(
    workload: Workload,
    cfg: GridConfig,
    rate_list: Sequence[float],
    cap: float | None,
    cb: Callbacks,
    run_one: Callable[[list[Any], str, float], Awaitable[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (rate, policy) run, rate-major (so a drift in the machine's load hits the policies
    compared at one rate alike), with the same arrivals for every policy at a rate. With
    `cfg.repeats` > 1 the policies of a rate run that many times, each repeat in a rotated order
    (`repeats.rotated`), and every record says which repeat it is. One broken run is recorded,
    not fatal."""
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
    runs.sort(key=lambda r: (r["rate"], r.get("repeat") or 0, cfg.policies.index(r["policy"])))
    return runs, failed


@dataclass
class RunClock:
    """Wall time and the load average over a whole benchmark, started when it starts."""

    t_start: float = field(default_factory=time.monotonic)
    load_start: float = field(default_factory=load_avg)

    def meta(self) -> dict[str, float]:
        return {
            "load_avg_start": self.load_start,
            "load_avg_end": load_avg(),
            "wall_s": time.monotonic() - self.t_start,
        }


@dataclass
class Grid:
    """One benchmark's (rate, policy) grid: what it was asked for, what ran and the clock over
    it, and the results.json frame built from them (so both backends' files agree field by
    field)."""

    workload: Workload
    cfg: GridConfig
    rates: Sequence[float] | None  # as given; None: `loads` x the capacity
    loads: Sequence[float]
    extra: dict[str, Any] | None = None  # more `meta` (workload options, ...)
    clock: RunClock = field(default_factory=RunClock)
    capacity: float | None = None
    rate_list: list[float] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def pick_rates(self, capacity: float | None) -> list[float]:
        """The rates to run, given the capacity measured (None when `rates` were given)."""
        self.capacity = capacity
        self.rate_list = rate_grid(self.rates, capacity, self.loads)
        return self.rate_list

    async def run(
        self,
        cb: Callbacks,
        run_one: Callable[[list[Any], str, float], Awaitable[dict[str, Any]]],
    ) -> None:
        """Every (rate, policy) run (`sweep`)."""
        self.runs, self.failed = await sweep(
            self.workload, self.cfg, self.rate_list, self.capacity, cb, run_one
        )

    def results(
        self,
        *,
        backend: str,
        simulated: bool,
        banner: str,
        probe: dict[str, Any] | None,
        specific: dict[str, Any],
    ) -> dict[str, Any]:
        """The results.json of the benchmark (before its summaries are added). `specific` is
        the `meta` only one backend records (engines, engine settings, servers, ...)."""
        wl, cfg = self.workload, self.cfg
        meta = {
            "workload": wl.name,
            "programs": len(wl.programs),
            "synthetic": wl.synthetic,
            "sources": wl.sources,
            "tokens": wl.tokens,
            "workload_stats": wl.stats(),
            "seed": cfg.seed,
            "arrival": cfg.arrival,
            "burst_cv": cfg.burst_cv if cfg.arrival == "bursty" else None,
            "policies": cfg.policies,
            "rates": list(self.rate_list),
            "loads": list(self.loads) if not self.rates else None,
            "schedulers": cfg.schedulers,
            "backend": backend,
            **specific,
            "machine": machine(),
            "cpus": os.cpu_count(),
            **self.clock.meta(),
            "command": command_line(),
            **(self.extra or {}),
        }
        return {
            "live": True,
            "backend": backend,
            "simulated": simulated,
            "banner": banner,
            "meta": meta,
            "probe": probe,
            "capacity_programs_per_s": self.capacity,
            "rates": list(self.rate_list),
            "runs": self.runs,
            "failed_runs": self.failed,
        }
