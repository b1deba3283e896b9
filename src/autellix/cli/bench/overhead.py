"""`autellix bench overhead`: what the control plane adds per call, and one scheduler replica's
decisions per second, with a zero-work SIMULATED engine (`autellix.bench.overhead`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from autellix.cli.bench.options import make_console
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt


def overhead(
    out: Annotated[Path, typer.Option(help="Output directory (writes overhead.json).")] = Path(
        "bench-overhead-results"
    ),
    calls: Annotated[int, typer.Option(min=3, help="Sequential calls for p50/p99.")] = 500,
    warmup: Annotated[int, typer.Option(min=0, help="Calls before measuring.")] = 20,
    burst: Annotated[
        int, typer.Option(min=2, help="Calls queued before a scheduler starts.")
    ] = 5000,
    concurrency: Annotated[
        int | None, typer.Option(help="Scheduler --concurrency (default: the scheduler's own).")
    ] = None,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    py_spy: Annotated[
        Path | None,
        typer.Option(help="py-spy: sample the scheduler during the burst into this file."),
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
    compare_direct: Annotated[
        bool,
        typer.Option(
            help="Also measure with direct hops off (JetStream only), in alternating rounds."
        ),
    ] = True,
    rounds: Annotated[
        int, typer.Option(min=1, help="Alternating rounds per setting when comparing.")
    ] = 2,
    dashboard_browsers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Instead: the dashboard's cost. Rounds of --calls calls alternate with no "
            "browser and with this many /ui event-stream clients (--rounds each); writes "
            "results.json, dashboard.md, dashboard.png.",
        ),
    ] = 0,
    policies: Annotated[
        str,
        typer.Option(
            help="Instead: each policy's decision cost. One scheduler replica's decisions/s on "
            "a --burst of calls per policy per round (--rounds, order rotated), e.g. "
            "atlas,gittins; writes results.json, policies.md, policies.png.",
        ),
    ] = "",
    scheduler_arg: Annotated[
        list[str] | None,
        typer.Option(help="With --policies: extra flag for the scheduler replica; repeat."),
    ] = None,
) -> None:
    """Control-plane overhead with a zero-work SIMULATED engine: per-call latency the frontend +
    scheduler + engine path adds (p50/p99), and one scheduler replica's decisions per second.
    With --dashboard-browsers N: the same calls with the live dashboard closed vs open. With
    --policies A,B: decisions/s per policy side by side."""

    console = make_console()
    if policies:
        _policies(console, out, policies, burst, rounds, tuple(scheduler_arg or ()), log_dir,
                  nats_url, database_url)  # fmt: skip
        return
    if dashboard_browsers:
        _dashboard(console, out, calls, warmup, rounds, dashboard_browsers, log_dir,
                   nats_url, database_url)  # fmt: skip
        return

    from autellix.bench.overhead import OverheadConfig, run_overhead, write_overhead

    cfg = OverheadConfig(
        calls=calls,
        warmup=warmup,
        burst=burst,
        scheduler_concurrency=concurrency,
        py_spy_out=py_spy,
        log_dir=log_dir,
        compare_direct=compare_direct,
        rounds=rounds,
    )
    with console.status("measuring control-plane overhead (zero-work SIMULATED engine) ..."):
        result = asyncio.run(run_overhead(cfg, nats_url=nats_url, database_url=database_url))
    paths = write_overhead(result, out)
    for line in result["summary"]:
        console.print(line)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _dashboard(
    console: Any,
    out: Path,
    calls: int,
    warmup: int,
    rounds: int,
    browsers: int,
    log_dir: Path | None,
    nats_url: str | None,
    database_url: str | None,
) -> None:
    """`--dashboard-browsers`: closed vs open rounds on one deployment serving HTTP."""
    from autellix.bench.overhead_dashboard import (
        DashboardConfig,
        run_dashboard_overhead,
        write_dashboard,
    )

    cfg = DashboardConfig(
        calls=calls, warmup=warmup, rounds=rounds, browsers=browsers, log_dir=log_dir
    )
    with console.status(f"dashboard closed vs open ({browsers} browser(s)) ..."):
        result = asyncio.run(
            run_dashboard_overhead(cfg, nats_url=nats_url, database_url=database_url)
        )
    paths = write_dashboard(result, out)
    for line in result["summary"]:
        console.print(line)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _policies(
    console: Any,
    out: Path,
    policies: str,
    burst: int,
    rounds: int,
    scheduler_args: tuple[str, ...],
    log_dir: Path | None,
    nats_url: str | None,
    database_url: str | None,
) -> None:
    """`--policies`: one scheduler replica's decisions/s per policy, rounds rotated."""
    from autellix.bench.overhead_policies import (
        PolicyCostConfig,
        run_policy_cost,
        write_policy_cost,
    )
    from autellix.policy.registry import POLICIES

    live = [name for name, p in POLICIES.items() if not p.oracle]  # oracles are sim-only
    names = tuple(n.strip() for n in policies.split(",") if n.strip())
    unknown = [n for n in names if n not in live]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise typer.BadParameter(
            f"two or more distinct live policies of {', '.join(live)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
            param_hint="--policies",
        )
    cfg = PolicyCostConfig(
        policies=names,
        rounds=rounds,
        burst=burst,
        scheduler_args=scheduler_args,
        log_dir=log_dir,
    )
    with console.status(f"decisions/s per policy ({', '.join(names)}), {rounds} round(s) ..."):
        try:
            result = asyncio.run(run_policy_cost(cfg, nats_url=nats_url, database_url=database_url))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    paths = write_policy_cost(result, out)
    for line in result["summary"]:
        console.print(line)
    console.print("wrote " + ", ".join(str(p) for p in paths))
