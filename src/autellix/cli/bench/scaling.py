"""`autellix bench scaling`: the LIVE stack with 1..8 SIMULATED engines and 1..2 scheduler
replicas at the same offered load per engine (`autellix.bench.scaling`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from autellix.cli.bench.options import (
    BatchOpt,
    PerSeqOpt,
    PrefillOpt,
    ProfileOpt,
    StepOpt,
    ints,
    make_console,
    sim_timing,
)
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt, parse_kv


def scaling(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bench-scaling-results"),
    workload: Annotated[str, typer.Option(help="sharegpt, bfcl, lats or mixed.")] = "mixed",
    engines_list: Annotated[str, typer.Option("--engines", help="Engine counts.")] = "1,2,4,8",
    schedulers_list: Annotated[
        str, typer.Option("--schedulers", help="Scheduler replica counts.")
    ] = "1,2",
    policy: Annotated[str, typer.Option(help="Live policy.")] = "atlas",
    balancer: Annotated[str, typer.Option(help="Engine load balancer.")] = "locality",
    programs_per_engine: Annotated[int, typer.Option(min=1, help="Programs per engine.")] = 30,
    load: Annotated[float, typer.Option(help="Offered load as a fraction of capacity.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    engine_profile: ProfileOpt = "cpu-tiny",
    max_batch: BatchOpt = 16,
    step_s: StepOpt = None,
    step_per_seq_s: PerSeqOpt = None,
    prefill_per_token_s: PrefillOpt = None,
    workload_option: Annotated[
        list[str] | None, typer.Option(help="WorkloadOptions KEY=VALUE override; repeat.")
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
) -> None:
    """LIVE stack + SIMULATED engines: throughput and latency with 1..8 engines and 1..2
    scheduler replicas at the same offered load per engine."""

    from autellix.bench.scaling import ScalingConfig, run_scaling, write_scaling
    from autellix.bench.workload import live_options

    console = make_console()
    cfg = ScalingConfig(
        workload=workload,
        engines=ints(engines_list),
        schedulers=ints(schedulers_list),
        policy=policy,
        balancer=balancer,
        programs_per_engine=programs_per_engine,
        load=load,
        seed=seed,
        timing=sim_timing(engine_profile, max_batch, step_s, step_per_seq_s, prefill_per_token_s),
        options=live_options(parse_kv(workload_option)),
        log_dir=log_dir,
    )
    payload = asyncio.run(
        run_scaling(cfg, nats_url=nats_url, database_url=database_url, console=console)
    )
    paths = write_scaling(payload, out)
    console.print("wrote " + ", ".join(str(p) for p in paths))
