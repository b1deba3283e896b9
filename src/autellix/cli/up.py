"""`autellix up`: the whole stack on this machine, supervised, stopped cleanly by Ctrl-C/SIGTERM.

A part that crashes (an engine, a scheduler, the frontend, the embedded NATS or Postgres) is
started again after a backoff while the rest keeps serving (``autellix.local.restarts``); each
restart is shown on the console and written to ``supervisor.log``. While the stack runs,
``<data-dir>/stack.json`` names its URLs (``autellix.local.stack_file``), so `autellix programs`,
`autellix calls` and ``Client()`` find it without flags.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from autellix.cli.common import (
    DatabaseUrlOpt,
    NamespaceOpt,
    NatsUrlOpt,
    print_rows,
)

DEFAULT_NATS_PORT = 4222
VLLM_READY_S = 900.0  # a vLLM engine loads its model (and on CPUs compiles kernels) first


def up(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    backend: Annotated[
        str, typer.Option(help="engines to start: sim (SIMULATED, timed by --sim-profile) or vllm")
    ] = "sim",
    model: Annotated[
        str | None,
        typer.Option(
            help="vllm: a model directory, a Hugging Face id, or dummy:<preset> (dummy weights "
            "and an offline tokenizer: no download)"
        ),
    ] = None,
    engines: Annotated[
        int | None, typer.Option(min=0, help="engines to start (default 2 sim, 1 vllm)")
    ] = None,
    engine_batch: Annotated[int, typer.Option(min=1, help="batch size of each engine")] = 8,
    sim_profile: Annotated[
        str | None,
        typer.Option(
            help="sim: timing profile of each step: gpu-a100-llama8b (default: Llama-3.1-8B on "
            "an A100), cpu-tiny, unit, a JSON path; none = zero-time tokens"
        ),
    ] = None,
    kv_cache_gib: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="vllm: KV cache size (default 1 on CPU; on GPUs vLLM sizes it)"
        ),
    ] = None,
    ready_timeout: Annotated[
        float | None,
        typer.Option(min=1, help="seconds to wait for every engine (default 120 sim, 900 vllm)"),
    ] = None,
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
    nats_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="embedded NATS' port (default 4222 when free, else one it picks; 0 = pick)",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded servers' data (default: user data dir)")
    ] = None,
    ephemeral: Annotated[
        bool, typer.Option(help="embedded servers in a temp dir, removed on exit")
    ] = False,
    log_dir: Annotated[Path | None, typer.Option(help="write each service's log here")] = None,
    quiet: Annotated[bool, typer.Option(help="do not echo service logs")] = False,
    restart_max_s: Annotated[
        float, typer.Option(min=0.1, help="longest wait before restarting a crashed part")
    ] = 30.0,
    nats_cluster: Annotated[
        int,
        typer.Option(
            min=0,
            max=5,
            help="embedded NATS as a cluster of this many servers on loopback (0 = one server)",
        ),
    ] = 0,
    js_replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            help="JetStream stream replicas (default $AUTELLIX_JS_REPLICAS, else 3 on a "
            "--nats-cluster of 3 or more, else 1)",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="HTTP API keys, one '<key> <tenant>' per line (default: a new key for tenant "
            "'default' in <data-dir>/auth/api-keys.txt; --insecure: the HTTP API is open)"
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            help="run the embedded NATS without authentication: any local process can read "
            "and forge every message (default: one generated user per role)"
        ),
    ] = False,
) -> None:
    """Start NATS, Postgres (embedded unless URLs are given), frontend, scheduler(s) and engines
    (SIMULATED, or vLLM with --backend vllm --model ...); restart whatever crashes; stop all of
    it on Ctrl-C/SIGTERM."""
    from autellix.local.backoff import BackoffPolicy
    from autellix.local.stack import Stack, StackConfig
    from autellix.runtime.settings import resolve

    settings = resolve(nats_url, database_url, namespace, js_replicas=js_replicas)
    if nats_cluster and settings.nats_url:
        raise typer.BadParameter("--nats-cluster starts embedded servers; leave out --nats-url")
    engine_configs = _engines(backend, model, engines, engine_batch, sim_profile, kv_cache_gib)
    extra = tuple(engine_arg or ())
    keys = _api_key_file(api_key_file, insecure, http_port, data_dir)
    config = StackConfig(
        frontend_args=("--api-key-file", str(keys)) if keys is not None else (),
        engines=[replace(e, extra_args=(*e.extra_args, *extra)) for e in engine_configs],
        ready_timeout_s=ready_timeout or (VLLM_READY_S if backend == "vllm" else 120.0),
        schedulers=schedulers,
        http_port=http_port or None,
        data_dir=data_dir,
        ephemeral=ephemeral,
        log_dir=log_dir,
        echo_logs=not quiet,
        nats_port=_nats_port(nats_port),
        restart=BackoffPolicy(initial_s=min(0.5, restart_max_s), max_s=restart_max_s),
        auth=not insecure and not nats_cluster,
    )
    if insecure:
        typer.secho(
            "WARNING: --insecure: NATS has no authentication; any process that reaches it can "
            "read every prompt and token and forge dispatches and cancels",
            fg="red", bold=True, err=True,
        )  # fmt: skip
    elif nats_cluster:
        typer.secho(
            "WARNING: --nats-cluster servers run without authentication (per-role users are "
            "generated for a single embedded server only)",
            fg="red", bold=True, err=True,
        )  # fmt: skip
    cluster = _start_cluster(nats_cluster, data_dir, ephemeral) if nats_cluster else None
    if cluster is not None:
        replicas = settings.js_replicas or (3 if nats_cluster >= 3 else 1)
        settings = replace(settings, nats_url=cluster.url, js_replicas=replicas)
    console = _console()
    stack = Stack(settings, config, on_restart=lambda event: _show(console, event))
    stack.api_key_file = keys
    try:
        raise typer.Exit(asyncio.run(_run(stack)))
    finally:
        if cluster is not None:
            cluster.stop()


def _api_key_file(
    given: Path | None, insecure: bool, http_port: int, data_dir: Path | None
) -> Path | None:
    """The HTTP API's key file: as given (checked now), else a new one, else none (--insecure
    or no HTTP API)."""
    from autellix.runtime import api_keys
    from autellix.runtime.settings import default_data_dir

    if given is not None:
        try:
            api_keys.read(given)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--api-key-file") from exc
        return given.absolute()
    if insecure or not http_port:
        return None
    path = (data_dir or default_data_dir()).absolute() / "auth" / "api-keys.txt"
    api_keys.generate(path)
    return path


def _engines(
    backend: str,
    model: str | None,
    count: int | None,
    batch: int,
    profile: str | None,
    kv_cache_gib: float | None,
) -> list[Any]:
    """The engines `autellix up` starts (``autellix.local.engine_specs``)."""
    from autellix.local import engine_specs

    if backend == "sim":
        if model is not None:
            raise typer.BadParameter("--model is for --backend vllm (sim engines have no model)")
        try:
            spec = engine_specs.sim_engine(batch, profile or engine_specs.DEFAULT_SIM_PROFILE)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--sim-profile") from exc
        return [spec for _ in range(2 if count is None else count)]
    if backend == "vllm":
        if not model:
            raise typer.BadParameter(
                "--backend vllm needs --model: a directory, a Hugging Face id or dummy:tiny"
            )
        from autellix.backends.vllm.engine import has_cuda

        spec = engine_specs.vllm_engine(model, batch, kv_cache_gib=kv_cache_gib, cuda=has_cuda())
        return [spec for _ in range(1 if count is None else count)]
    raise typer.BadParameter(f"unknown backend {backend!r}: sim or vllm", param_hint="--backend")


def _start_cluster(size: int, data_dir: Path | None, ephemeral: bool) -> Any:
    """`size` clustered NATS servers (``autellix.local.nats_cluster``), started from this main
    thread before the event loop (their parent-death signal follows the starting thread). Not
    under the stack's restarter: the cluster itself survives one server down."""
    from autellix.local.nats_cluster import EmbeddedNatsCluster
    from autellix.runtime.settings import default_data_dir

    state = None if ephemeral else (data_dir or default_data_dir()) / "nats-cluster"
    typer.echo(f"starting a NATS cluster of {size} servers ...", err=True)
    return EmbeddedNatsCluster(size, state).start()


def _nats_port(asked: int | None) -> int | None:
    """The port to pin: as asked (0 = let the server pick), else 4222 when nothing holds it."""
    if asked is not None:
        return asked or None
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", DEFAULT_NATS_PORT))
        except OSError:
            return None
    return DEFAULT_NATS_PORT


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _show(console: Any, event: Any) -> None:
    """A restart step on the console: red when a part went down, green when it is back."""
    style = {"exited": "bold red", "restarted": "bold green"}.get(event.event, "bold magenta")
    text = event.describe()
    if event.crash_loop and event.event == "exited":
        text += ": it keeps crashing; see its log"
    console.print(f"[{style}]supervisor[/] {text}", highlight=False)


async def _run(stack: Any) -> int:
    from autellix.local import stack_file
    from autellix.local.stack import Stack, StackError

    assert isinstance(stack, Stack)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    written: Path | None = None
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
        # the banner is out (and flushed: stdout may be a file) before stack.json appears, so
        # whoever waits for the file also finds what the stack printed
        dashboard = [("dashboard", f"{stack.http_url}/ui/")] if stack.http_url else []
        if dashboard and stack.api_key_file is not None:  # the dashboard is behind the key
            dashboard.append(("dashboard login", f"paste a key from {stack.api_key_file}"))
        path = stack.data_dir.absolute() / stack_file.STACK_FILE
        print_rows(
            "Autellix is up (Ctrl-C to stop)",
            [*stack.describe(), *dashboard, ("stack file", str(path))],
        )
        sys.stdout.flush()
        written = stack_file.write(stack.data_dir, _stack_info(stack))
        await stop.wait()
        return 0
    finally:
        typer.echo("stopping services ...", err=True)
        if written is not None:
            stack_file.remove(written)
        await stack.stop()
        typer.echo("stopped", err=True)


def _stack_info(stack: Any) -> Any:
    from autellix.local.stack_file import StackInfo
    from autellix.runtime.nats_permissions import Role

    s = stack.settings
    creds = stack.credentials
    user_file = str(creds.user_files[Role.client]) if creds is not None else None
    return StackInfo(
        nats_url=s.nats_url, database_url=s.database_url, namespace=s.namespace,
        http_url=stack.http_url,
        credentials={"nats_user_file": user_file, "api_key_file": _str(stack.api_key_file)},
    )  # fmt: skip


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def register(app: typer.Typer) -> None:
    app.command()(up)
