"""`engines_scaling`: the schedulers' cost per decision as the engines they choose from grow.

Per engine count (8, 64, 256, 1,000 by default) one deployment: a frontend, one engine host
process running that many light identities (`engine --identities N --token-latency 0`: every
identity registers, heartbeats every second and answers its calls with a zero-time SIMULATED
completion), and 1, then 2, then 4 scheduler replicas (added while the engines keep running).
The same steady load (`rate_per_s` calls/s of the mixed programs, 4 output tokens each) is
offered in every phase, so what changes between rows is only the engine or replica count.

Measured per phase, over a window of `window_s` seconds of load:

* **CPU per decision**: CPU seconds of all scheduler processes over the window (from /proc,
  the load's calls settled inside it) / calls dispatched; the schedulers' CPU/s with no load at
  all (`idle_cpu_per_s`: hearing a thousand heartbeats a second costs something) is recorded
  beside it, and `cpu_per_decision_marginal_ms` takes it out;
* **decisions/s**: calls dispatched / window;
* **dispatch latency**: p50 / p99 of accept → engine start, from the calls' Postgres timestamps;
* **Postgres writes/s**: commits/s and rows written/s of the deployment's database over the
  window, and over an idle window before any load (`idle_*`: heartbeats and the schedulers'
  housekeeping alone).

Engine counts run in rotated order across repeats (repeat r starts at the r-th count).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.cluster.deployment import Deployment, deployment, dispatch_latencies
from autellix.bench.cluster.load import SteadyLoad, mixed_request
from autellix.bench.cluster.pgstat import pg_counters
from autellix.bench.cluster.procstat import total_cpu_seconds
from autellix.local.stack import EngineConfig, StackConfig

ENGINE_ARGS = ("--token-latency", "0", "--report-interval", "1")
SCHEDULER_ARGS: list[str] = []


@dataclass
class ScalingPlan:
    engines: list[int] = field(default_factory=lambda: [8, 64, 256, 1000])
    schedulers: list[int] = field(default_factory=lambda: [1, 2, 4])
    rate_per_s: float = 40.0
    window_s: float = 5.0
    warmup_s: float = 1.5
    idle_s: float = 2.0
    max_tokens: int = 4
    repeats: int = 1
    log_dir: Path | None = None

    def phases(self) -> int:
        return self.repeats * len(self.engines) * len(self.schedulers)


async def _cpu_over(dep: Deployment, seconds: float) -> tuple[float, float]:
    """CPU seconds per second of (the schedulers, the engine host) over `seconds` of idling."""
    sched, host = dep.pids("scheduler-"), dep.pids("engine-")
    c0, h0 = total_cpu_seconds(sched), total_cpu_seconds(host)
    await asyncio.sleep(seconds)
    return (total_cpu_seconds(sched) - c0) / seconds, (total_cpu_seconds(host) - h0) / seconds


async def _phase(
    dep: Deployment, plan: ScalingPlan, load: SteadyLoad, prefix: str
) -> dict[str, Any]:
    def make(i: int) -> Any:
        return mixed_request(i, prefix, max_tokens=plan.max_tokens)

    if plan.warmup_s > 0:
        warm = await load.run(
            plan.rate_per_s,
            plan.warmup_s,
            lambda i: mixed_request(i, f"{prefix}w", max_tokens=plan.max_tokens),
        )
        await load.settle(warm, 20.0, grace_s=0.2)
    pids, host = dep.pids("scheduler-"), dep.pids("engine-")
    host0 = total_cpu_seconds(host)
    cpu0, pg0, t0 = total_cpu_seconds(pids), await pg_counters(dep.direct_url), time.monotonic()
    calls = await load.run(plan.rate_per_s, plan.window_s, make)
    await load.settle(calls, 20.0, grace_s=0.0)
    wall = time.monotonic() - t0
    cpu1, pg1 = total_cpu_seconds(pids), await pg_counters(dep.direct_url)
    host_cpu = total_cpu_seconds(host) - host0
    db = await dispatch_latencies(dep.direct_url, f"{prefix}-")
    out = load.outcome(calls)
    cpu = cpu1 - cpu0
    decisions = int(db["dispatched"])
    return {
        "wall_s": wall,
        "decisions": decisions,
        "decisions_per_s": decisions / wall,
        "scheduler_cpu_s": cpu,
        "cpu_per_decision_ms": 1000 * cpu / max(1, decisions),
        "engine_host_cpu_per_s": host_cpu / wall,
        "dispatch_p50_ms": db["dispatch_p50_ms"],
        "dispatch_p99_ms": db["dispatch_p99_ms"],
        **{k: v for k, v in db.items() if k.startswith(("accept_to", "dispatch_to"))},
        **pg0.rates(pg1),
        "completed": out.completed,
        "lost": out.lost,
        "failed_explicitly": out.failed_explicitly,
    }


async def run_engines_scaling(
    nats_url: str,
    admin_url: str,
    plan: ScalingPlan,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every (engine count, scheduler count) phase; one row each."""
    import nats

    say = progress or (lambda _msg: None)
    rows: list[dict[str, Any]] = []
    for rep in range(plan.repeats):
        k = rep % len(plan.engines)
        for n_eng in plan.engines[k:] + plan.engines[:k]:
            config = StackConfig(
                engines=[EngineConfig("sim", 8, ENGINE_ARGS, identities=n_eng)],
                schedulers=1,
                scheduler_args=SCHEDULER_ARGS,
                ready_timeout_s=300.0,
                log_dir=plan.log_dir / f"engines-{n_eng}-r{rep}" if plan.log_dir else None,
            )
            t_start = time.monotonic()
            async with deployment(nats_url, admin_url, config, tag=f"e{n_eng}") as dep:
                start_s = time.monotonic() - t_start
                await asyncio.sleep(1.0)  # every identity's first heartbeats written
                pg0 = await pg_counters(dep.direct_url)
                idle_cpu, idle_host = await _cpu_over(dep, plan.idle_s)
                idle = pg0.rates(await pg_counters(dep.direct_url))
                nc = await nats.connect(nats_url)
                load = await SteadyLoad(nc, dep.stack.subjects).start()
                try:
                    for n_sched in sorted(plan.schedulers):
                        await dep.add_schedulers(n_sched, SCHEDULER_ARGS)
                        if n_sched > 1:
                            idle_cpu, idle_host = await _cpu_over(dep, plan.idle_s)
                        say(f"engines {n_eng}, schedulers {n_sched}, repeat {rep + 1}")
                        row = await _phase(dep, plan, load, f"s{n_eng}x{n_sched}r{rep}")
                        marginal = row["scheduler_cpu_s"] - idle_cpu * row["wall_s"]
                        rows.append(
                            {
                                "engines": n_eng,
                                "schedulers": n_sched,
                                "repeat": rep,
                                "stack_start_s": start_s,
                                "idle_cpu_per_s": idle_cpu,
                                "idle_engine_host_cpu_per_s": idle_host,
                                "cpu_per_decision_marginal_ms": 1000
                                * max(0.0, marginal)
                                / max(1, row["decisions"]),
                                "idle_commits_per_s": idle["commits_per_s"],
                                "idle_rows_written_per_s": idle["rows_written_per_s"],
                                **row,
                            }
                        )
                finally:
                    await load.stop()
                    await nc.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (engines, schedulers): the median over repeats of each figure; the goals at the
    largest engine count against the smallest, per scheduler count."""
    import statistics

    keys = (
        "cpu_per_decision_ms",
        "cpu_per_decision_marginal_ms",
        "idle_cpu_per_s",
        "decisions_per_s",
        "dispatch_p50_ms",
        "dispatch_p99_ms",
        "accept_to_dispatch_p99_ms",
        "dispatch_to_start_p99_ms",
        "idle_engine_host_cpu_per_s",
        "commits_per_s",
        "rows_written_per_s",
        "idle_commits_per_s",
        "idle_rows_written_per_s",
    )
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for e, s in sorted({(r["engines"], r["schedulers"]) for r in rows}):
        group = [r for r in rows if r["engines"] == e and r["schedulers"] == s]
        cells[(e, s)] = {
            "engines": e,
            "schedulers": s,
            "repeats": len(group),
            **{k: statistics.median(r[k] for r in group) for k in keys},
            "lost": sum(r["lost"] for r in group),
        }
    engines = sorted({e for e, _ in cells})
    goals = []
    if len(engines) >= 2:
        lo, hi = engines[0], engines[-1]
        for s in sorted({s for _, s in cells}):
            a, b = cells.get((lo, s)), cells.get((hi, s))
            if a is None or b is None:
                continue
            cpu = b["cpu_per_decision_ms"] / a["cpu_per_decision_ms"]
            marg = b["cpu_per_decision_marginal_ms"] / max(1e-9, a["cpu_per_decision_marginal_ms"])
            p99 = b["dispatch_p99_ms"] / a["dispatch_p99_ms"]
            # the half the schedulers own (accept -> dispatch recorded) and the engines' half
            p99_sched = b["accept_to_dispatch_p99_ms"] / a["accept_to_dispatch_p99_ms"]
            p99_engine = b["dispatch_to_start_p99_ms"] / a["dispatch_to_start_p99_ms"]
            writes = b["rows_written_per_s"] / max(1e-9, a["rows_written_per_s"])
            idle_writes = b["idle_rows_written_per_s"] / max(1e-9, a["idle_rows_written_per_s"])
            commits = b["idle_commits_per_s"] / max(1e-9, a["idle_commits_per_s"])
            growth = hi / lo
            goals.append(
                {
                    "schedulers": s,
                    "from_engines": lo,
                    "to_engines": hi,
                    "engine_growth": growth,
                    "cpu_per_decision_ratio": cpu,
                    "cpu_per_decision_marginal_ratio": marg,
                    "dispatch_p99_ratio": p99,
                    "accept_to_dispatch_p99_ratio": p99_sched,
                    "dispatch_to_start_p99_ratio": p99_engine,
                    "rows_written_ratio": writes,
                    "idle_rows_written_ratio": idle_writes,
                    "idle_commits_ratio": commits,
                    "cpu_met": cpu <= 2.0,
                    "p99_met": p99 <= 2.0,
                    "writes_met": writes <= growth and idle_writes <= growth,
                }
            )
    return {"cells": list(cells.values()), "goals": goals}
