"""`autellix demo`: a small mixed agentic workload through a live stack, with a results table.

Starts an embedded stack (throw-away NATS + Postgres, frontend, scheduler, simulated engines)
unless `--nats-url` points at a running deployment whose frontend answers; runs single-threaded
chat programs, function-calling programs and multi-threaded tree-search programs concurrently;
prints per-program latency and throughput. Exit status 0 only if every call was answered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Annotated

import typer

from autellix.bench.reporting import fmt_s
from autellix.bench.reporting import pct as _pct
from autellix.cli.common import (
    DatabaseUrlOpt,
    NamespaceOpt,
    NatsUrlOpt,
    print_rows,
    progress_bar,
)


def demo(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    programs: Annotated[int, typer.Option(min=1, help="programs to run")] = 12,
    rate: Annotated[float, typer.Option(min=0.01, help="program arrivals per second")] = 4.0,
    engines: Annotated[int, typer.Option(min=1, help="simulated engines (embedded stack)")] = 2,
    engine_batch: Annotated[int, typer.Option(min=1, help="batch size per engine")] = 8,
    step_s: Annotated[
        float, typer.Option(help="simulated seconds per decode step (embedded stack)")
    ] = 0.004,
    seed: Annotated[int, typer.Option(help="workload seed")] = 0,
    call_timeout: Annotated[float, typer.Option(help="seconds before a call times out")] = 120.0,
) -> None:
    """Run a small mixed agentic workload (chats, function calling, tree search) end to end."""
    from autellix.runtime.settings import resolve

    settings = resolve(nats_url, database_url, namespace)
    code = asyncio.run(
        _demo(settings, programs, rate, engines, engine_batch, step_s, seed, call_timeout)
    )
    raise typer.Exit(code)


def _workload(n: int, seed: int, rate: float) -> tuple[list, str]:
    from autellix.workloads.arrivals import with_arrivals
    from autellix.workloads.loader import load_workload
    from autellix.workloads.options import WorkloadOptions

    # The paper's program shapes, scaled down so the demo takes seconds: fewer tree-search
    # iterations, shorter outputs and tool times. Every kind keeps its structure.
    opts = WorkloadOptions(
        sharegpt_calls_mean=3.0,
        sharegpt_calls_max=6,
        sharegpt_user_mean=64.0,
        sharegpt_output_mean=48.0,
        sharegpt_token_cap=512,
        bfcl_turns_mean=2.0,
        bfcl_turns_max=3,
        bfcl_tool_s=0.02,
        lats_calls_mean=22.0,
        lats_iterations_max=3,
        lats_output_mean=24.0,
        lats_output_cap=96,
        lats_tool_s=0.05,
        max_context_tokens=2048,
    )
    wl = load_workload("mixed", n, seed, options=opts)
    return with_arrivals(wl.programs, rate, seed), ", ".join(
        f"{k}: {v}" for k, v in sorted(wl.sources.items())
    )


async def _frontend_running(nats_url: str, namespace: str) -> bool:
    import nats

    from autellix.wire.protocol import Subjects

    try:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        await nc.request(Subjects(namespace).program_open, b'{"program_id":"demo-probe"}', 1.0)
        return True
    except Exception:
        return False
    finally:
        await nc.close()


async def _demo(
    settings,  # type: ignore[no-untyped-def]
    n: int,
    rate: float,
    engines: int,
    batch: int,
    step_s: float,
    seed: int,
    call_timeout: float,
) -> int:
    from rich.console import Console

    from autellix.client import Client
    from autellix.local.stack import EngineConfig, Stack, StackConfig

    probe = Console()
    console = Console(width=max(probe.width, 120)) if not probe.is_terminal else probe
    specs, sources = _workload(n, seed, rate)
    stack: Stack | None = None
    if settings.nats_url and await _frontend_running(settings.nats_url, settings.namespace):
        console.print(f"using the running deployment at {settings.nats_url}")
    else:
        config = StackConfig(
            engines=[
                EngineConfig("sim", batch, ("--token-latency", str(step_s))) for _ in range(engines)
            ],
            ephemeral=True,
        )
        stack = Stack(settings, config)
        with console.status("starting the embedded stack (NATS, Postgres, services) ..."):
            await stack.start()
        print_rows("embedded stack", stack.describe(), console)
        settings = stack.settings
    try:
        async with Client(settings.nats_url, namespace=settings.namespace) as client:
            runs, wall = await _run(console, client, specs, call_timeout, sources)
    finally:
        if stack is not None:
            with console.status("stopping the stack ..."):
                await stack.stop()
    _report(console, runs, wall, simulated=stack is not None)
    failed = sum(r.failed_calls for r in runs)
    if failed:
        console.print(f"[red]{failed} call(s) failed[/red]")
        for r in runs:
            for e in r.errors[:3]:
                console.print(f"  {r.program_id}: {e}")
        return 1
    return 0


async def _run(console, client, specs, call_timeout, sources):  # type: ignore[no-untyped-def]

    from autellix.bench.driver import run_workload

    total_calls = sum(len(s.calls) for s in specs)
    kinds: dict[str, int] = {}
    for s in specs:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    console.print(
        f"workload: {len(specs)} programs ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
        f"{total_calls} calls; sources: {sources}"
    )
    with progress_bar(console) as progress:
        calls = progress.add_task("calls answered", total=total_calls)
        progs = progress.add_task("programs finished", total=len(specs))
        return await run_workload(
            client,
            specs,
            call_timeout=call_timeout,
            on_call=lambda _run, _res: progress.advance(calls),
            on_program=lambda _run: progress.advance(progs),
            id_prefix=f"demo{int(time.time() * 1000) % 10**8}-",
        )


def _report(console, runs, wall: float, simulated: bool) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    title = "per-program results" + (" (SIMULATED engines)" if simulated else "")
    table = Table(title=title)
    for col in ("program", "kind", "calls", "threads", "out tokens", "latency", "per token"):
        table.add_column(col, justify="right" if col not in ("program", "kind") else "left")
    table.add_column("engine #")
    table.add_column("ok")
    for r in sorted(runs, key=lambda r: r.arrival_s):
        table.add_row(
            r.program_id.split("-", 1)[1],
            r.kind,
            str(r.calls),
            str(r.threads),
            str(r.output_tokens),
            fmt_s(r.latency_s),
            fmt_s(r.latency_per_token_s),
            ",".join(sorted(e.rsplit("-", 1)[-1] for e in r.engines)),
            "yes" if r.ok else f"[red]{r.failed_calls} failed[/red]",
        )
    console.print(table)
    lat = [r.latency_s for r in runs]
    tokens = sum(r.output_tokens for r in runs)
    summary = [
        ("programs", str(len(runs))),
        ("wall time", f"{wall:.2f} s"),
        ("throughput", f"{len(runs) / wall:.2f} programs/s, {tokens / wall:.0f} tokens/s"),
        ("avg program latency", f"{statistics.fmean(lat):.2f} s"),
        ("p95 program latency", f"{_pct(lat, 95):.2f} s"),
        (
            "avg latency per token",
            f"{statistics.fmean(r.latency_per_token_s for r in runs) * 1000:.1f} ms",
        ),
    ]
    by_kind: dict[str, list[float]] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r.latency_s)
    for kind, values in sorted(by_kind.items()):
        summary.append((f"avg latency ({kind})", f"{statistics.fmean(values):.2f} s"))
    print_rows("summary", summary, console)


def register(app: typer.Typer) -> None:
    app.command()(demo)
