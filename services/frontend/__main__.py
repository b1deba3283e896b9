"""`python -m autellix.services.frontend`: accept calls over NATS (run N replicas for scale)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autellix.runtime.options import ConcurrencyOpt, DatabaseUrlOpt, NamespaceOpt, NatsUrlOpt
from autellix.runtime.service import resolve_settings
from autellix.services.frontend.admission import (
    DEFAULT_MAX_UNFINISHED_CALLS,
    DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
)

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    concurrency: ConcurrencyOpt = 256,
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
    tool_call_parser: Annotated[
        str | None,
        typer.Option(
            help="HTTP: how tool calls are read from model text (as vLLM's flag): hermes "
            "(<tool_call>{json}</tool_call>, Qwen/Hermes) or llama3_json; default: by model name"
        ),
    ] = None,
    max_unfinished_calls: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="AUTELLIX_MAX_UNFINISHED_CALLS",
            help="back-pressure: refuse new calls (overloaded / HTTP 429) while this many are "
            "unfinished in the whole deployment (0: no bound)",
        ),
    ] = DEFAULT_MAX_UNFINISHED_CALLS,
    max_unfinished_calls_per_tenant: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="AUTELLIX_MAX_UNFINISHED_CALLS_PER_TENANT",
            help="back-pressure per tenant (an HTTP API key's): refuse that tenant's new calls "
            "(HTTP 429) while this many of its calls are unfinished; others are still admitted "
            "(0: no bound)",
        ),
    ] = DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="AUTELLIX_API_KEY_FILE",
            help="HTTP: require 'Authorization: Bearer <key>' on /v1; one '<key> <tenant>' per "
            "line (none: the HTTP API is open)",
        ),
    ] = None,
) -> None:
    """Validate and register calls and programs; hand calls to the schedulers."""
    from autellix.services.frontend.service import FrontendOptions, run

    settings = resolve_settings(nats_url, database_url, namespace)
    options = FrontendOptions(
        concurrency=concurrency,
        http_port=http_port,
        http_host=http_host,
        http_call_timeout_s=http_call_timeout,
        tool_call_parser=_parser_name(tool_call_parser),
        max_unfinished_calls=max_unfinished_calls,
        max_unfinished_calls_per_tenant=max_unfinished_calls_per_tenant,
        api_keys=_api_keys(api_key_file),
    )
    run(settings, options)


def _api_keys(path: Path | None) -> dict[str, str] | None:
    """The key file's keys, checked at start (a bad file is a clear error, not open access)."""
    if path is None:
        return None
    from autellix.runtime.api_keys import read

    try:
        return read(path)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api-key-file") from exc


def _parser_name(name: str | None) -> str | None:
    """The flag's parser, checked against the ones there are (a typo fails at start)."""
    from autellix.services.frontend.tool_parsers import PARSERS

    if name is not None and name not in PARSERS:
        raise typer.BadParameter(f"unknown tool-call parser {name!r}; choose {sorted(PARSERS)}")
    return name


if __name__ == "__main__":
    app()
