"""`autellix bench textout`: what detokenizing a call's output text costs, the old whole-prefix
algorithm against the incremental one (`autellix.bench.textout_cost`)."""

from __future__ import annotations

from typing import Annotated

import typer

from autellix.cli.bench.options import ints


def textout(
    sizes: Annotated[str, typer.Option(help="Output lengths in tokens.")] = "1000,4000,16000",
    flush_every: Annotated[int, typer.Option(min=1, help="Tokens between deltas.")] = 8,
    old_budget: Annotated[
        float, typer.Option(min=0.0, help="Seconds one run of the old algorithm may take.")
    ] = 2.0,
) -> None:
    """Detokenization cost per output token, old (O(n^2)) vs incremental, with and without stop
    strings; fails where the two give different answers."""
    from autellix.bench.textout_cost import textout_cost

    textout_cost(ints(sizes), flush_every=flush_every, old_budget=old_budget, echo=typer.echo)
