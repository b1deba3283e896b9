"""`bench scaling`: the live stack with 1, 2, 4, 8 SIMULATED engines and 1 vs 2 schedulers.

Each configuration gets the same offered load *per engine* (`load` x one engine's analytic
capacity x engines, with `programs_per_engine` x engines programs), so perfect scaling keeps
latency flat and throughput proportional to the engine count. On this two-core machine the
services themselves compete for the CPU with the engines they drive, so the point where the
control plane (not the engines) becomes the limit is part of what this shows; the simulator's
prediction of each run (ideal, no control plane) is recorded beside it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.engine import SimEngineTiming
from autellix.bench.live import LiveConfig, live_run
from autellix.bench.report import BANNER
from autellix.bench.reporting import load_avg, write_report_files
from autellix.bench.stack import Infra
from autellix.bench.workload import LIVE_OPTIONS, load_live_workload
from autellix.sim.sweep import analytic_capacity
from autellix.workloads import WorkloadOptions
from autellix.workloads.arrivals import with_arrivals


@dataclass
class ScalingConfig:
    workload: str = "mixed"
    engines: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    schedulers: list[int] = field(default_factory=lambda: [1, 2])
    policy: str = "atlas"
    balancer: str = "locality"
    programs_per_engine: int = 30
    load: float = 1.0
    seed: int = 0
    timing: SimEngineTiming = field(default_factory=SimEngineTiming.from_profile)
    options: WorkloadOptions = LIVE_OPTIONS
    log_dir: Path | None = None


async def run_scaling(
    cfg: ScalingConfig,
    *,
    nats_url: str | None = None,
    database_url: str | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Every (engines, schedulers) configuration once; the scaling results payload."""
    t0 = time.perf_counter()
    load0 = load_avg()
    runs: list[dict[str, Any]] = []
    async with Infra(nats_url, database_url) as infra:
        for n_eng in cfg.engines:
            wl = load_live_workload(
                cfg.workload, cfg.programs_per_engine * n_eng, cfg.seed, options=cfg.options
            )
            cap1 = analytic_capacity(wl.programs, cfg.timing.profile(), 1)
            rate = float(f"{cfg.load * cap1 * n_eng:.4g}")
            programs = with_arrivals(wl.programs, rate, cfg.seed)
            for n_sched in cfg.schedulers:
                live_cfg = LiveConfig(
                    workload=cfg.workload,
                    policies=[cfg.policy],
                    timing=cfg.timing,
                    engines=n_eng,
                    schedulers=n_sched,
                    balancer=cfg.balancer,
                    seed=cfg.seed,
                    log_dir=cfg.log_dir,
                )
                if console is not None:
                    console.print(
                        f"{BANNER}: {n_eng} engine(s), {n_sched} scheduler(s), "
                        f"{len(programs)} programs at {rate:.4g}/s ..."
                    )
                rec = await live_run(infra, live_cfg, programs, cfg.policy, rate)
                span = max(1e-9, rec["makespan_s"])
                rec.update(
                    {
                        "scheduler_replicas": n_sched,
                        "capacity_per_engine_programs_per_s": cap1,
                        "offered_load": cfg.load,
                        "output_tokens_per_s": rec.get("output_tokens", 0) / span,
                        "calls_per_s": rec.get("calls", 0) / span,
                    }
                )
                runs.append(rec)
                if console is not None:
                    console.print(
                        f"  throughput {rec['throughput_programs_per_s']:.3g} programs/s, "
                        f"{rec['output_tokens_per_s']:.0f} tokens/s, {rec['calls_per_s']:.1f} "
                        f"calls/s; avg {rec['avg_latency_s']:.2f} s (simulated "
                        f"{rec.get('sim_avg_latency_s', float('nan')):.2f} s); "
                        f"{rec['avg_latency_per_token_s'] * 1000:.1f} ms/token; failed calls "
                        f"{rec['failed_calls']}; load {rec['load_avg_end']:.1f}"
                    )
        servers = infra.describe()
    return {
        "simulated": True,
        "live": True,
        "backend": "sim",
        "banner": f"{BANNER} — scaling",
        "meta": {
            "workload": cfg.workload,
            "policy": cfg.policy,
            "balancer": cfg.balancer,
            "engines": cfg.engines,
            "schedulers": cfg.schedulers,
            "programs_per_engine": cfg.programs_per_engine,
            "offered_load": cfg.load,
            "seed": cfg.seed,
            "engine": cfg.timing.describe(),
            "workload_options": asdict(cfg.options),
            "servers": servers,
            "machine_cpus": os.cpu_count(),
            "load_avg_start": load0,
            "load_avg_end": load_avg(),
            "wall_s": time.perf_counter() - t0,
            "command": " ".join(sys.argv),
        },
        "runs": runs,
    }


def _rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "engines",
        "schedulers",
        "rate",
        "programs/s",
        "tokens/s",
        "sim tokens/s",
        "calls/s",
        "x 1 engine",
        "avg lat s",
        "sim avg lat s",
        "live/sim",
        "p99 lat s",
        "avg s/tok",
        "sim s/tok",
        "util",
        "failed",
        "load",
    ]
    base: dict[int, float] = {}
    for r in payload["runs"]:
        if r["engines"] == min(payload["meta"]["engines"]):
            base.setdefault(r["scheduler_replicas"], r["output_tokens_per_s"])
    rows = []
    for r in payload["runs"]:
        util = r["engine_utilization"]
        b = base.get(r["scheduler_replicas"])
        rows.append(
            [
                str(r["engines"]),
                str(r["scheduler_replicas"]),
                f"{r['rate']:.4g}",
                f"{r['throughput_programs_per_s']:.3g}",
                f"{r['output_tokens_per_s']:.0f}",
                f"{r.get('output_tokens', 0) / r['sim_makespan_s']:.0f}"
                if r.get("sim_makespan_s")
                else "-",
                f"{r['calls_per_s']:.1f}",
                f"{r['output_tokens_per_s'] / b:.2f}x" if b else "-",
                f"{r['avg_latency_s']:.3g}",
                f"{r.get('sim_avg_latency_s', float('nan')):.3g}",
                f"{r.get('live_over_sim_avg_latency', float('nan')):.2f}",
                f"{r['p99_latency_s']:.3g}",
                f"{r['avg_latency_per_token_s']:.4f}",
                f"{r.get('sim_avg_latency_per_token_s', float('nan')):.4f}",
                f"{sum(util) / max(1, len(util)):.2f}",
                str(r["failed_calls"]),
                f"{r['load_avg_start']:.1f}-{r['load_avg_end']:.1f}",
            ]
        )
    return header, rows


def markdown(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    header, rows = _rows(payload)
    eng = meta["engine"]
    lines = [
        f"# {BANNER}: scaling (engines x scheduler replicas)",
        "",
        f"Policy `{meta['policy']}`, workload `{meta['workload']}` ({meta['programs_per_engine']} "
        f"programs per engine), offered load {meta['offered_load']:.0%} of the engines' analytic "
        f"capacity. SIMULATED engines: {eng['step_s'] * 1000:.2f} ms/step + "
        f"{eng['step_per_seq_s'] * 1000:.3f} ms/seq, batch {eng['max_batch']}. Machine: "
        f"{meta['machine_cpus']} CPUs, load average {meta['load_avg_start']:.2f} -> "
        f"{meta['load_avg_end']:.2f}.",
        f"Command: `{meta['command']}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for n_sched in sorted({r["scheduler_replicas"] for r in runs}):
        pts = sorted(
            (r["engines"], r["output_tokens_per_s"], r["avg_latency_per_token_s"])
            for r in runs
            if r["scheduler_replicas"] == n_sched
        )
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1] for p in pts], marker="o", label=f"{n_sched} scheduler(s)")
        axes[1].plot(xs, [p[2] for p in pts], marker="o", label=f"{n_sched} scheduler(s)")
        if n_sched == min(r["scheduler_replicas"] for r in runs) and pts:
            axes[0].plot(
                xs, [pts[0][1] * x / pts[0][0] for x in xs], ls=":", color="grey", label="linear"
            )
    axes[0].set_ylabel("output tokens/s (live)")
    axes[1].set_ylabel("average latency per token (s)")
    for ax in axes:
        ax.set_xlabel("SIMULATED engines")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{BANNER} — scaling, policy {payload['meta']['policy']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_scaling(payload: dict[str, Any], out: Path) -> list[Path]:
    """results.json, the scaling plot and its Markdown report; returns their paths."""
    paths = write_report_files(
        out,
        payload,
        png="scaling.live-simulated-engines.png",
        md="scaling.live-simulated-engines.md",
        plot=plot,
        markdown=markdown,
    )
    return list(paths.values())
