"""One live run: a workload at one arrival rate through a fresh stack with one policy.

The run is recorded in the shape of `autellix sim`'s `runs` entries (`sim.metrics.run_record` on
the live outcomes), so every tool that reads simulator results reads these too, plus:

* `live: true`, `backend: "sim"`, `engines_label` (the engines are SIMULATED: the `sim` backend
  with the timing in `meta.engine`), `policy_applied` (false when the scheduler could not be
  told the policy and ran its built-in FCFS), failures, the machine's load average;
* the simulator's prediction for the same programs, arrivals, policy and an engine profile
  derived from the sim engine's flags (`sim_avg_latency_s`, `sim_p99_latency_s`, ...), and a
  *calibrated* prediction (`sim_cal_*`) whose profile is stretched by the step slowdown measured
  on this machine and whose calls each carry the measured control-plane delay, so the gap
  between live and simulated splits into engine speed, control plane, and the rest;
* a diagnostic `sim_explained_*`: `sim_cal` with the prefill cost scaled so the simulated
  engines prefill as many prompt tokens as the live ones did (the two prefix caches differ);
* engine work: `uncached_prompt_tokens` and `batch_occupancy` (mean calls running while busy),
  live and simulated.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench import callpath
from autellix.bench.dbstats import as_dict, run_db_stats
from autellix.bench.driver import ProgramRun, run_workload
from autellix.bench.engine import EngineSpec
from autellix.bench.enginework import listen_engine_work
from autellix.bench.probe import ProbeResult
from autellix.bench.reporting import load_avg
from autellix.bench.stack import Infra, run_stack
from autellix.client import CallResult, Client
from autellix.sim.metrics import outcome_metrics, run_record
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.workloads.types import ProgramSpec

ENGINES_LABEL = "SIMULATED engines (sim backend) behind the live stack"
# Live policy name -> the simulator's policy that models it (None: no prediction).
SIM_POLICY = {
    "fcfs": "fcfs",
    "fcfs-nocache": "fcfs-nocache",
    "mlfq": "mlfq",
    "plas": "plas",
    "atlas": "atlas",
    "atlas-exact": "atlas-exact",
}


@dataclass
class LiveConfig:
    """What stays fixed across the (policy, rate) runs of one live benchmark."""

    workload: str
    policies: list[str]
    timing: EngineSpec  # SimEngineTiming, or another backend's spec (no simulator prediction)
    engines: int = 1
    schedulers: int = 1
    seed: int = 0
    arrival: str = "poisson"
    burst_cv: float = 3.0
    balancer: str = "locality"
    call_timeout_s: float = 900.0
    log_dir: Path | None = None
    extra_scheduler_args: list[str] = field(default_factory=list)
    # a real vLLM engine takes 30-70 s to start on this CPU (more when the machine is busy)
    ready_timeout_s: float = 180.0
    repeats: int = 1  # `sweep` runs the grid this many times (the CLI allows > 1 for vllm only)


@dataclass
class _CallTotals:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    run_s: float = 0.0
    levels: list[int] = field(default_factory=list)


def outcomes_of(runs: list[ProgramRun], totals: dict[str, _CallTotals]) -> list[ProgramOutcome]:
    """Live `ProgramRun`s as the simulator's `ProgramOutcome`s (so the same metrics apply)."""
    out = []
    for r in runs:
        t = totals.get(r.program_id, _CallTotals())
        out.append(r.outcome(t.run_s, r.preemptions, t.cached_tokens, t.prompt_tokens))
    return out


def with_call_delay(programs: list[ProgramSpec], delay_s: float) -> list[ProgramSpec]:
    """Programs whose every call is issued `delay_s` later (a control-plane delay per call)."""
    if delay_s <= 0:
        return programs
    return [
        dataclasses.replace(
            p, calls=tuple(dataclasses.replace(c, delay_s=c.delay_s + delay_s) for c in p.calls)
        )
        for p in programs
    ]


def predict(
    programs: list[ProgramSpec],
    policy: str,
    cfg: LiveConfig,
    *,
    balancer: str,
    scale: float = 1.0,
    prefill_scale: float = 1.0,
    call_delay_s: float = 0.0,
) -> dict[str, Any] | None:
    """The simulator's metrics for these programs under `policy` on the modelled engines."""
    from autellix.sim import simulate

    sim_policy = SIM_POLICY.get(policy)
    if sim_policy is None or not hasattr(cfg.timing, "profile"):
        return None
    run = simulate(
        with_call_delay(programs, call_delay_s),
        policy=sim_policy,
        engines=cfg.engines,
        profile=cfg.timing.profile(  # type: ignore[attr-defined]
            scale=scale, prefill_scale=prefill_scale
        ),
        balancer=balancer,
        seed=cfg.seed,
    )
    m = outcome_metrics(run.programs)
    m["makespan_s"] = run.makespan_s
    m["preemptions"] = run.preemptions
    m["engine_utilization"] = list(run.engine_utilization)
    m["cache_hit_rate"] = run.cache_hit_rate
    m.update(work_stats(run.programs, run.engine_utilization, run.makespan_s))
    kinds = sorted({o.kind for o in run.programs})
    if len(kinds) > 1:
        m["per_kind_avg_latency_s"] = {
            k: outcome_metrics([o for o in run.programs if o.kind == k])["avg_latency_s"]
            for k in kinds
        }
    return m


def work_stats(
    outcomes: list[ProgramOutcome], utilization: list[float], makespan_s: float
) -> dict[str, float]:
    """What the engines had to do and how full their batches were while busy.

    uncached_prompt_tokens: prompt tokens prefilled (not served from the prefix cache);
    batch_occupancy: mean running calls while an engine was busy (sum of call run times over
    the engines' busy time).
    """
    busy = sum(utilization) * makespan_s
    return {
        "uncached_prompt_tokens": float(
            sum(o.prompt_tokens - o.cached_prompt_tokens for o in outcomes)
        ),
        "batch_occupancy": sum(o.executing_s for o in outcomes) / busy if busy > 0 else 0.0,
    }


def _prediction_fields(prefix: str, m: dict[str, Any] | None, live: dict[str, Any]) -> dict:
    if m is None:
        return {}
    keys = (
        "avg_latency_s",
        "p50_latency_s",
        "p99_latency_s",
        "avg_latency_per_token_s",
        "p99_latency_per_token_s",
        "avg_waiting_s",
        "avg_executing_s",
        "makespan_s",
        "preemptions",
        "cache_hit_rate",
        "uncached_prompt_tokens",
        "batch_occupancy",
    )
    out = {f"{prefix}_{k}": m[k] for k in keys if k in m}
    if "per_kind_avg_latency_s" in m:
        out[f"{prefix}_per_kind_avg_latency_s"] = m["per_kind_avg_latency_s"]
    if m.get("avg_latency_s"):
        out[f"live_over_{prefix}_avg_latency"] = live["avg_latency_s"] / m["avg_latency_s"]
    return out


async def live_run(
    infra: Infra,
    cfg: LiveConfig,
    programs: list[ProgramSpec],
    policy: str,
    rate: float,
    *,
    probe: ProbeResult | None = None,
    on_program: Callable[[ProgramRun], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run `programs` (arrival times already set for `rate`) live under `policy`; one record."""
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    totals: dict[str, _CallTotals] = {}

    def on_call(run: ProgramRun, res: CallResult | None) -> None:
        if res is None:
            return
        t = totals.setdefault(run.program_id, _CallTotals())
        t.prompt_tokens += res.usage.prompt_tokens
        t.cached_tokens += res.usage.cached_tokens
        t.run_s += res.timing.run_s
        t.levels.append(res.level)

    load_start = load_avg()
    async with run_stack(
        infra,
        policy=policy,
        timing=cfg.timing,
        engines=cfg.engines,
        schedulers=cfg.schedulers,
        balancer=cfg.balancer,
        extra_scheduler_args=cfg.extra_scheduler_args,
        log_dir=cfg.log_dir,
        ready_timeout_s=cfg.ready_timeout_s,
    ) as rs:
        if on_started:
            on_started()
        async with (
            listen_engine_work(rs.settings.nats_url, rs.settings.namespace) as work,
            Client(
                rs.settings.nats_url, namespace=rs.settings.namespace, timeout=cfg.call_timeout_s
            ) as client,
        ):
            t0 = time.monotonic()
            runs, wall = await run_workload(
                client,
                programs,
                call_timeout=cfg.call_timeout_s,
                on_call=on_call,
                on_program=on_program,
                id_prefix=prefix,
            )
            if work.latest:  # engines that count their work: take the counts at the end
                await work.settle()
        engine_work = work.summary()
        assert rs.settings.database_url is not None
        db = await run_db_stats(rs.settings.database_url, prefix)
        engine_ids = list(rs.stack.engine_ids)
        stack_start_s = rs.start_s
        applied, sched_args, balancer = rs.policy_applied, rs.scheduler_args, rs.balancer
    load_end = load_avg()

    outcomes = outcomes_of(runs, totals)
    prompt = sum(o.prompt_tokens for o in outcomes)
    cached = sum(o.cached_prompt_tokens for o in outcomes)
    run = SimRun(
        policy=policy,
        programs=outcomes,
        makespan_s=wall,
        preemptions=max(db.preemptions, sum(r.preemptions for r in runs)),
        engine_utilization=db.utilization(engine_ids),
        cache_hit_rate=cached / max(1, prompt),
        stats={"db_window_s": db.window_s},
        simulated=False,
    )
    rec = run_record(
        run,
        workload=cfg.workload,
        rate=rate,
        engines=cfg.engines,
        schedulers=cfg.schedulers,
        arrival=cfg.arrival,
        seed=cfg.seed,
    )
    failed_calls = sum(r.failed_calls for r in runs)
    rec.update(work_stats(outcomes, run.engine_utilization, db.window_s or wall))
    backend = cfg.timing.backend
    rec.update(
        {
            "live": True,
            "backend": backend,
            # sim backend: the engines are simulated (the control plane is real)
            "simulated": backend == "sim",
            "engines_label": ENGINES_LABEL if backend == "sim" else f"{backend} engines",
            "policy_applied": applied,
            "scheduler_args": sched_args,
            "failed_calls": failed_calls,
            "failed_programs": sum(1 for r in runs if not r.ok),
            "errors": [e for r in runs for e in r.errors][:10],
            "wall_s": time.monotonic() - t0,
            "stack_start_s": stack_start_s,
            "load_avg_start": load_start,
            "load_avg_end": load_end,
            # more runnable processes than CPUs (ours included): timings stretch, see README
            "cpu_contended": max(load_start, load_end) > (os.cpu_count() or 1),
            "db": as_dict(db),
            "engine_work": engine_work,
            "call_path": callpath.summarize(p for r in runs for p in r.paths),
        }
    )
    # Predictions run after the stack stopped, so they do not take CPU from the live run.
    sim_policy = SIM_POLICY.get(policy) if applied else "fcfs"
    rec["sim_policy"] = sim_policy
    rec["balancer"] = balancer
    if sim_policy is not None:
        rec.update(
            _prediction_fields("sim", predict(programs, sim_policy, cfg, balancer=balancer), rec)
        )
        if probe is not None:
            cal = predict(
                programs,
                sim_policy,
                cfg,
                balancer=balancer,
                scale=probe.step_scale,
                call_delay_s=probe.per_call_overhead_s,
            )
            rec.update(_prediction_fields("sim_cal", cal, rec))
            # Diagnostic, not a prediction: also give the simulator the prefill work the live
            # engines really did (prefix-cache hits differ, see bench/live/README.md). If this
            # lands near the live latency, the named effects explain the gap.
            if cal and cal.get("uncached_prompt_tokens"):
                fit = rec["uncached_prompt_tokens"] / cal["uncached_prompt_tokens"]
                explained = predict(
                    programs,
                    sim_policy,
                    cfg,
                    balancer=balancer,
                    scale=probe.step_scale,
                    prefill_scale=fit,
                    call_delay_s=probe.per_call_overhead_s,
                )
                rec["sim_explained_prefill_scale"] = fit
                rec.update(_prediction_fields("sim_explained", explained, rec))
    return rec
