"""`autellix bench report`: rewrite the Markdown and PNG next to an existing results.json (after
a report format change), recomputing the summaries that derive from its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    results: Annotated[Path, typer.Argument(help="A results.json of `bench live` or `scaling`.")],
) -> None:
    """Rewrite the Markdown and PNG next to a results.json (after a report format change)."""
    from autellix.bench.reporting import read_json

    payload = read_json(results)
    if payload.get("backend") == "vllm":
        from autellix.bench import vllm_compare, vllm_report

        paths = list(
            vllm_report.write_outputs(vllm_compare.summarize(payload), results.parent).values()
        )
    elif "scaling" in payload.get("banner", ""):
        from autellix.bench.scaling import write_scaling

        paths = write_scaling(payload, results.parent)
    else:
        from autellix.bench.report import write_outputs
        from autellix.bench.suite import summarize

        paths = list(write_outputs(summarize(payload), results.parent).values())
    typer.echo("wrote " + ", ".join(str(p) for p in paths))
