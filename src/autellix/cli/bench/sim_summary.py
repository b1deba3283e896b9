"""`autellix bench sim-summary`: the SIMULATED sweeps under a directory as Markdown on stdout
(`autellix.bench.sim_summary`), e.g. `autellix bench sim-summary > bench/sim/summary.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sim_summary(
    root: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Directory of <workload>/results.json sweeps."
        ),
    ] = Path("bench/sim"),
    tables: Annotated[
        bool,
        typer.Option(
            "--tables", help="The condensed tables for bench/README.md instead of the summary."
        ),
    ] = False,
) -> None:
    """Summarise the SIMULATED sweeps (and, with --tables, the ablations) as Markdown."""
    from autellix.bench.sim_summary import summary_markdown, tables_markdown

    typer.echo(tables_markdown(root) if tables else summary_markdown(root))
