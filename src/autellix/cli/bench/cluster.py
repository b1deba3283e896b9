"""`autellix bench cluster`: the control plane with up to 1,000 light engines and 1, 2, 4
scheduler replicas, a NATS cluster losing a server, and Postgres through PgBouncer
(`autellix.bench.cluster`); writes cluster.json, cluster.md and cluster.png."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from autellix.cli.bench.options import ints, make_console
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt, progress_bar


def cluster(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bench-cluster-results"),
    engines_list: Annotated[
        str, typer.Option("--engines", help="Engine counts (light identities in one process).")
    ] = "8,64,256,1000",
    schedulers_list: Annotated[
        str, typer.Option("--schedulers", help="Scheduler replica counts.")
    ] = "1,2,4",
    rate: Annotated[float, typer.Option(min=1.0, help="engines_scaling: calls/s offered.")] = 40.0,
    window: Annotated[
        float, typer.Option(min=1.0, help="engines_scaling: seconds measured per phase.")
    ] = 5.0,
    idle: Annotated[
        float, typer.Option(min=0.5, help="engines_scaling: seconds of the idle windows.")
    ] = 2.0,
    warmup: Annotated[
        float, typer.Option(min=0.0, help="engines_scaling: seconds of load before a window.")
    ] = 1.5,
    repeats: Annotated[
        int, typer.Option(min=1, help="engines_scaling: repeats (engine counts rotated).")
    ] = 2,
    failover_load: Annotated[
        float,
        typer.Option(min=3.0, help="nats_failover: seconds of load (kill at 2 s, back 2 s later)."),
    ] = 7.0,
    pgbouncer_rounds: Annotated[
        int, typer.Option(min=1, help="pgbouncer: rounds of every mode (rotated order).")
    ] = 2,
    pgbouncer_load: Annotated[
        float, typer.Option(min=1.0, help="pgbouncer: seconds of load.")
    ] = 5.0,
    parts: Annotated[
        str,
        typer.Option(help="Comma-separated parts: engines_scaling, nats_failover, pgbouncer."),
    ] = "engines_scaling,nats_failover,pgbouncer",
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
) -> None:
    """LIVE control plane + SIMULATED engines: scheduler CPU per decision, dispatch latency and
    Postgres writes as engines grow 8 -> 1,000; a NATS server SIGKILLed under load; PgBouncer
    transaction pooling against Postgres directly."""
    from autellix.bench.cluster.failover import FailoverPlan
    from autellix.bench.cluster.pooler import PoolerPlan
    from autellix.bench.cluster.report import write_cluster
    from autellix.bench.cluster.run import PARTS, ClusterConfig, run_cluster
    from autellix.bench.cluster.scaling import ScalingPlan

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    scaling = ScalingPlan(
        engines=ints(engines_list),
        schedulers=ints(schedulers_list),
        rate_per_s=rate,
        window_s=window,
        idle_s=idle,
        warmup_s=warmup,
        repeats=repeats,
    )
    if any(n < 1 for n in scaling.engines + scaling.schedulers):
        raise typer.BadParameter("engine and scheduler counts must be >= 1")
    cfg = ClusterConfig(
        scaling=scaling,
        failover=FailoverPlan(load_s=failover_load),
        pooler=PoolerPlan(rounds=pgbouncer_rounds, load_s=pgbouncer_load),
        parts=chosen,
        log_dir=log_dir,
    )
    steps = scaling.phases() if "engines_scaling" in chosen else 0
    steps += ("nats_failover" in chosen) + 3 * pgbouncer_rounds * ("pgbouncer" in chosen)
    console = make_console()
    with progress_bar(console) as bar:
        task = bar.add_task("bench cluster", total=steps)
        first = True

        def progress(msg: str) -> None:
            nonlocal first
            if not first:
                bar.advance(task)
            first = False
            bar.update(task, description=msg)
            console.log(msg)

        payload = asyncio.run(
            run_cluster(cfg, nats_url=nats_url, database_url=database_url, progress=progress)
        )
        bar.update(task, completed=steps, description="bench cluster: done")
    paths = write_cluster(payload, out)
    console.print("wrote " + ", ".join(str(p) for p in paths))
