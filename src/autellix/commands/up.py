"""`autellix up`: the whole stack on this machine, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from autellix.commands.common import (
    DatabaseUrlOpt,
    NamespaceOpt,
    NatsUrlOpt,
    print_rows,
)


def up(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    engines: Annotated[int, typer.Option(min=0, help="simulated engines to start")] = 2,
    engine_batch: Annotated[int, typer.Option(min=1, help="batch size of each engine")] = 8,
    engine_arg: Annotated[
        list[str] | None, typer.Option(help="extra argument for every engine (repeatable)")
    ] = None,
    schedulers: Annotated[int, typer.Option(min=1, help="scheduler replicas")] = 1,
    http_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="serve the OpenAI-compatible HTTP API on this port (0 = off)"
        ),
    ] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded servers' data (default: user data dir)")
    ] = None,
    ephemeral: Annotated[
        bool, typer.Option(help="embedded servers in a temp dir, removed on exit")
    ] = False,
    log_dir: Annotated[Path | None, typer.Option(help="write each service's log here")] = None,
    quiet: Annotated[bool, typer.Option(help="do not echo service logs")] = False,
) -> None:
    """Start NATS, Postgres (embedded unless URLs are given), frontend, scheduler(s) and
    simulated engines; print where everything listens; stop all of it on Ctrl-C/SIGTERM."""
    from autellix.settings import resolve
    from autellix.stack import EngineConfig, Stack, StackConfig

    settings = resolve(nats_url, database_url, namespace)
    config = StackConfig(
        engines=[
            EngineConfig("sim", engine_batch, tuple(engine_arg or ())) for _ in range(engines)
        ],
        schedulers=schedulers,
        http_port=http_port or None,
        data_dir=data_dir,
        ephemeral=ephemeral,
        log_dir=log_dir,
        echo_logs=not quiet,
    )
    raise typer.Exit(asyncio.run(_run(Stack(settings, config))))


async def _run(stack: object) -> int:
    from autellix.stack import Stack, StackError

    assert isinstance(stack, Stack)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        start = asyncio.create_task(stack.start())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if start not in done:
            start.cancel()
            typer.echo("interrupted during start-up; stopping", err=True)
            return 130
        stopper.cancel()
        try:
            start.result()
        except StackError as exc:
            typer.echo(f"error: {exc}", err=True)
            return 1
        print_rows("Autellix is up (Ctrl-C to stop)", stack.describe())
        while not stop.is_set():
            if stack.group is not None and stack.group.unexpected_exits:
                event = stack.group.unexpected_exits[0]
                typer.echo(f"error: {event.describe()}; stopping", err=True)
                code = 1
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                pass
        return code
    finally:
        typer.echo("stopping services ...", err=True)
        await stack.stop()
        typer.echo("stopped", err=True)


def register(app: typer.Typer) -> None:
    app.command()(up)
