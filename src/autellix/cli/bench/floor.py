"""`autellix bench floor`: what the frontend -> scheduler -> engine path's shape costs with none
of Autellix's logic (`autellix.bench.floor`), to compare with `autellix bench overhead`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autellix.cli.bench.options import make_console
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt


def floor(
    out: Annotated[Path, typer.Option(help="Output directory (writes floor.json).")] = Path(
        "bench-floor-results"
    ),
    calls: Annotated[int, typer.Option(min=3, help="Sequential calls per setting.")] = 1000,
    warmup: Annotated[int, typer.Option(min=0, help="Calls before measuring.")] = 50,
    repeats: Annotated[
        int, typer.Option(min=1, help="Times to measure both settings, alternating.")
    ] = 2,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """The floor of the control-plane path: the same processes, hops and Postgres round trips as
    the real path with no Autellix logic, inner hops through JetStream and over core NATS."""
    import uvloop

    from autellix.bench.floor import FloorConfig, result_line, run_floor, write_floor

    console = make_console()
    cfg = FloorConfig(calls=calls, warmup=warmup, repeats=repeats)
    payload = uvloop.run(
        run_floor(
            cfg,
            nats_url=nats_url,
            database_url=database_url,
            on_result=lambda r: console.print(result_line(r), highlight=False),
        )
    )
    console.print(f"wrote {write_floor(payload, out)}")
