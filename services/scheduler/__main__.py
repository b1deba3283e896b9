"""`python -m autellix.services.scheduler`: one scheduler replica (run as many as you like)."""

from __future__ import annotations

from typing import Annotated

import typer

from autellix.service_runtime import resolve_settings, run_service

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    nats_url: Annotated[str | None, typer.Option(help="NATS URL (env AUTELLIX_NATS_URL)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Postgres URL (env AUTELLIX_DATABASE_URL)")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="subject/stream namespace (env AUTELLIX_NAMESPACE)")
    ] = None,
    replica: Annotated[str | None, typer.Option(help="name in logs and call events")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="calls handled at once")] = 32,
    ack_wait: Annotated[
        float, typer.Option(help="seconds before an unacked call is redelivered")
    ] = 10.0,
    no_engine_timeout: Annotated[
        float, typer.Option(help="fail a call with no_engine after this many seconds")
    ] = 60.0,
    retry_delay: Annotated[float, typer.Option(help="seconds between no-engine retries")] = 0.5,
    engine_live: Annotated[
        float, typer.Option(help="heartbeat age after which no new calls go to an engine")
    ] = 3.0,
    engine_stale: Annotated[
        float, typer.Option(help="heartbeat age after which an engine's calls are re-dispatched")
    ] = 5.0,
    maintenance_interval: Annotated[
        float, typer.Option(help="seconds between reaper passes")
    ] = 1.0,
    reconcile_after: Annotated[
        float, typer.Option(help="republish calls queued without activity this long")
    ] = 30.0,
) -> None:
    """Dispatch accepted calls to engines (FCFS for now), reap lost engines."""
    from autellix.services.scheduler.service import SchedulerOptions, build

    settings = resolve_settings(nats_url, database_url, namespace)
    options = SchedulerOptions(
        concurrency=concurrency,
        ack_wait_s=ack_wait,
        no_engine_timeout_s=no_engine_timeout,
        retry_delay_s=retry_delay,
        engine_live_s=engine_live,
        engine_stale_s=engine_stale,
        maintenance_interval_s=maintenance_interval,
        reconcile_after_s=reconcile_after,
        replica=replica,
    )

    async def _build(s, log):  # type: ignore[no-untyped-def]
        return await build(s, log, options)

    run_service("scheduler", _build, settings)


if __name__ == "__main__":
    app()
