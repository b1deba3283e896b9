"""Options and output helpers shared by the CLI commands (kept import-light)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

import typer

NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        envvar="AUTELLIX_NATS_URL",
        help="NATS server; without it an embedded one starts.",
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="AUTELLIX_DATABASE_URL",
        help="Postgres URL; without it an embedded one starts.",
    ),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace", envvar="AUTELLIX_NAMESPACE", help="subject/stream prefix (default autellix)"
    ),
]


def print_rows(title: str, rows: Iterable[tuple[str, str]], console: Any = None) -> None:
    """A two-column (what, value) table; `console` defaults to a new rich Console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for what, where in rows:
        table.add_row(what, where)
    (console or Console()).print(table)


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """KEY=VALUE pairs (repeatable CLI options); values parsed as JSON when they are (numbers,
    true/false), else strings. Anything without "=" is refused as a bad parameter."""
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"expected KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out
