"""Options and output helpers shared by the CLI commands (kept import-light)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import typer

# the connection options are the services' too: declared once, in runtime/options.py
from autellix.runtime.options import DatabaseUrlOpt, NamespaceOpt, NatsUrlOpt

__all__ = [
    "DatabaseUrlOpt",
    "NamespaceOpt",
    "NatsUrlOpt",
    "parse_kv",
    "print_rows",
    "progress_bar",
    "stack_database_url",
]


def stack_database_url(given: str | None) -> str | None:
    """``given`` (the flag or ``AUTELLIX_DATABASE_URL``), else the running `autellix up`
    stack's (its ``stack.json``, see ``autellix.local.stack_file``), else None."""
    if given:
        return given
    from autellix.local.stack_file import discover

    info = discover()
    return info.database_url if info is not None else None


def progress_bar(console: Any) -> Any:
    """A rich progress display on `console` whose tasks show description, bar, done/total and
    time elapsed: the columns every long-running command shows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


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
