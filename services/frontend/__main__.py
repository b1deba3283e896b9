"""`python -m autellix.services.frontend`: accept calls over NATS (run N replicas for scale)."""

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
    concurrency: Annotated[int, typer.Option(min=1, help="requests handled at once")] = 256,
    http_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="also serve the OpenAI-compatible HTTP API on this port"
        ),
    ] = None,
    http_host: Annotated[
        str, typer.Option(help="address the HTTP API listens on (0.0.0.0: all interfaces)")
    ] = "127.0.0.1",
    http_call_timeout: Annotated[
        float, typer.Option(min=1.0, help="HTTP: seconds a call may take before 504")
    ] = 600.0,
) -> None:
    """Validate and register calls and programs; hand calls to the schedulers."""
    from autellix.services.frontend.app import build

    settings = resolve_settings(nats_url, database_url, namespace)

    async def _build(s, log):  # type: ignore[no-untyped-def]
        frontend = await build(s, log, concurrency)
        if http_port is None:
            return frontend
        from autellix.services.frontend.http_server import FrontendWithHttp

        return FrontendWithHttp(
            frontend, log, host=http_host, port=http_port, call_timeout_s=http_call_timeout
        )

    run_service("frontend", _build, settings)


if __name__ == "__main__":
    app()
