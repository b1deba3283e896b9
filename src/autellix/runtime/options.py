"""Command-line options shared by the `autellix` CLI and the three service processes.

Why one module: `--nats-url`, `--database-url` and `--namespace` mean the same thing everywhere
(flag, then the `AUTELLIX_*` environment variable, then the default: `settings.resolve`), so
they are declared once here and every command and every `services/*/__main__.py` uses these
declarations. Kept import-light (typer and `settings` only): a service's `--help` and the CLI's
start-up import it before anything heavy.
"""

from __future__ import annotations

from typing import Annotated

import typer

from autellix.runtime.settings import ENV_DATABASE_URL, ENV_NAMESPACE, ENV_NATS_URL

__all__ = ["ConcurrencyOpt", "DatabaseUrlOpt", "NamespaceOpt", "NatsUrlOpt"]

NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        envvar=ENV_NATS_URL,
        help="NATS server URL (none: the CLI starts an embedded one)",
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=ENV_DATABASE_URL,
        help="Postgres URL (none: the CLI starts an embedded one)",
    ),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace", envvar=ENV_NAMESPACE, help="subject/stream prefix (default autellix)"
    ),
]
#: how many messages a service works on at once (each service sets its own default)
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, help="requests or calls handled at once")
]
