"""`autellix bench ablations`: the SIMULATED ablation sets (`autellix.bench.ablations`), each
written as `<out>/<set>.json`, `.simulated.md` and `.simulated.png`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in (x.strip() for x in text.split(",")) if n)


def ablations(
    profile: Annotated[
        str, typer.Option(help="Simulator engine profile (gpu-a100-llama8b, cpu-tiny, ...).")
    ] = "gpu-a100-llama8b",
    programs: Annotated[int, typer.Option(min=1, help="Programs per set (seed 0).")] = 1000,
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated set names (default: all); `balancer` = balance-1,2,4,8 and "
            "their summary."
        ),
    ] = "",
    jobs: Annotated[int, typer.Option(min=1, help="Simulations run in parallel.")] = 2,
    variants: Annotated[
        str,
        typer.Option(
            help="Run only these variants of the set; the others' runs come from its existing "
            "JSON (to split a long set into runs of under ~10 minutes)."
        ),
    ] = "",
    programs_per_engine: Annotated[
        int,
        typer.Option(
            min=1,
            help="balance-<n> sets: programs = this x engines (same per-engine load and length).",
        ),
    ] = 500,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory (default: bench/sim/ablations/<profile>)."),
    ] = None,
) -> None:
    """SIMULATED ablations: where the gain comes from, preemption, anti-starvation and the p99
    bound, quanta, ATLAS vs PLAS, and load balancing over 1-8 engines."""
    from autellix.bench.ablations.run import AblationConfig, run_ablations

    cfg = AblationConfig(
        out=out or Path("bench/sim/ablations") / profile,
        profile=profile,
        programs=programs,
        only=_names(only),
        variants=_names(variants),
        jobs=jobs,
        programs_per_engine=programs_per_engine,
    )
    try:
        run_ablations(cfg, echo=typer.echo)
    except ValueError as exc:  # an unknown set, or parts of a set that do not compare
        raise typer.BadParameter(str(exc)) from exc
