"""`python -m autellix.services.engine`: one engine process (backend `sim` or `vllm`)."""

from __future__ import annotations

from typing import Annotated

import typer

from autellix.runtime.options import DatabaseUrlOpt, NamespaceOpt, NatsUrlOpt
from autellix.runtime.service import resolve_settings

app = typer.Typer(add_completion=False, help=__doc__)


def _parse_opts(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--opt expects key=value, got {item!r}")
        out[key.replace("-", "_")] = value
    return out


@app.command()
def main(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    backend: Annotated[str, typer.Option(help="sim (simulated) or vllm")] = "sim",
    engine_id: Annotated[
        str | None, typer.Option(help="stable id (default: <backend>-<random>)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model name or path")] = None,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(
            help="name calls ask for this model by (repeatable, as vLLM's flag); default: --model"
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="calls running at once")] = 8,
    max_model_len: Annotated[int | None, typer.Option(help="context length in tokens")] = None,
    token_latency: Annotated[
        float, typer.Option(help="sim: seconds per batch step (decode token)")
    ] = 0.0,
    step_per_seq: Annotated[float, typer.Option(help="sim: extra seconds per step per call")] = 0.0,
    prefill_per_token: Annotated[
        float, typer.Option(help="sim: seconds per uncached prompt token")
    ] = 0.0,
    opt: Annotated[
        list[str] | None, typer.Option(help="backend option key=value (repeatable)")
    ] = None,
    heartbeat_interval: Annotated[float, typer.Option(help="seconds between heartbeats")] = 1.0,
    progress_interval: Annotated[float, typer.Option(help="seconds between progress saves")] = 1.0,
    report_interval: Annotated[
        float, typer.Option(help="seconds between service reports (0 = off)")
    ] = 0.1,
    drain_timeout: Annotated[
        float, typer.Option(help="on SIGTERM, seconds running calls get to finish")
    ] = 20.0,
    orphan_sweep: Annotated[
        float, typer.Option(help="hand back calls owned in Postgres but unknown here after (s)")
    ] = 30.0,
    outage_sweep_age: Annotated[
        float,
        typer.Option(
            help="once Postgres is back after an outage, hand back at once the calls owned in "
            "Postgres but unknown here that were dispatched longer ago than this (s)"
        ),
    ] = 3.0,
    delta_interval: Annotated[
        float, typer.Option(help="min seconds between token deltas of one call")
    ] = 0.02,
    preemption: Annotated[
        bool, typer.Option(help="preempt lower-level calls for higher-level ones")
    ] = True,
    max_preemptions: Annotated[
        int, typer.Option(min=1, help="priority preemptions in flight at once (per step)")
    ] = 1,
    identities: Annotated[
        int,
        typer.Option(
            min=1,
            help="sim only: run this many light engine identities in this process (ids "
            "<engine-id>-0000, -0001, ...; one NATS connection, one Postgres pool, heartbeats "
            "written in one statement): control-plane scale tests",
        ),
    ] = 1,
) -> None:
    """Run one engine: consume its dispatch subjects, generate, stream tokens to callers."""
    from autellix.services.engine.service import EngineOptions, run
    from autellix.services.engine.state import RunnerConfig

    settings = resolve_settings(nats_url, database_url, namespace)
    backend_options: dict[str, object] = {"max_batch": max_batch}
    if model:
        backend_options["model"] = model
    if max_model_len:
        backend_options["max_model_len"] = max_model_len
    if backend == "sim":
        backend_options.update(
            token_latency_s=token_latency,
            step_per_seq_s=step_per_seq,
            prefill_s_per_token=prefill_per_token,
        )
    backend_options.update(_parse_opts(opt or []))
    options = EngineOptions(
        backend=backend,
        engine_id=engine_id,
        backend_options=backend_options,
        served_models=list(served_model_name or []),
        heartbeat_interval_s=heartbeat_interval,
        progress_interval_s=progress_interval,
        report_interval_s=report_interval,
        drain_timeout_s=drain_timeout,
        orphan_sweep_s=orphan_sweep,
        outage_sweep_age_s=outage_sweep_age,
        runner=RunnerConfig(
            delta_interval_s=delta_interval,
            preemption=preemption,
            max_inflight_preemptions=max_preemptions,
        ),
    )
    try:
        options.resolved_id()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if identities > 1:
        if backend != "sim":
            raise typer.BadParameter("--identities > 1 needs --backend sim (light engines)")
        from autellix.services.engine.host import run as run_host

        run_host(settings, options, identities)
        return
    run(settings, options)


if __name__ == "__main__":
    app()
