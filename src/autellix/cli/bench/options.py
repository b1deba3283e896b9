"""What several `autellix bench` sub-commands share: the sim engine's timing flags, parsers for
comma-separated lists, and the console they print to.

Kept light (typer only at import time) so building the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from autellix.bench.engine import SimEngineTiming

ProfileOpt = Annotated[
    str,
    typer.Option(help="Simulator profile whose step/per-seq/prefill terms the sim engine takes."),
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Batch size (max running calls) per engine.")]
StepOpt = Annotated[float | None, typer.Option(help="Override: sim engine seconds per batch step.")]
PerSeqOpt = Annotated[
    float | None, typer.Option(help="Override: sim engine extra seconds per step per sequence.")
]
PrefillOpt = Annotated[
    float | None, typer.Option(help="Override: sim engine seconds per uncached prompt token.")
]

# the REAL vLLM engine's flags, for every sub-command that starts one
VllmModelOpt = Annotated[
    str,
    typer.Option(
        help="vllm: model directory, HF name, or a built-in dummy-weight Llama preset "
        "(dummy:tiny, dummy:bench, dummy:llama-8b)."
    ),
]
MaxModelLenOpt = Annotated[int, typer.Option(min=16, help="vllm: max model length.")]
KvCacheGibOpt = Annotated[
    float,
    typer.Option(min=0.0, help="vllm: KV cache size in GiB (CPU); 0 = vLLM's own sizing (GPUs)."),
]
ModelDirOpt = Annotated[Path | None, typer.Option(help="vllm: where dummy presets are written.")]


def floats(text: str | None) -> list[float] | None:
    """`--rates 0.5,1.0` and the like: positive numbers, or None for an empty option."""
    if not text:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise typer.BadParameter("expected positive comma-separated numbers")
    return vals


def ints(text: str) -> list[int]:
    """`--engines 1,2,4,8` and the like: positive integers."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise typer.BadParameter("expected positive comma-separated integers")
    return vals


def sim_timing(
    profile: str, batch: int, step: float | None, per_seq: float | None, prefill: float | None
) -> SimEngineTiming:
    """The sim engine's timing from a profile and the override flags; a bad value is a usage
    error of the flag, not a traceback."""
    from autellix.bench.engine import SimEngineTiming

    try:
        return SimEngineTiming.from_profile(
            profile,
            batch,
            step_s=step,
            step_per_seq_s=per_seq,
            prefill_per_token_s=prefill,
            **({"source": "explicit flags"} if None not in (step, per_seq, prefill) else {}),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def make_console() -> Console:
    """A rich console; wide when output is not a terminal (logs, CI) so tables stay readable."""
    from rich.console import Console

    probe = Console()
    return probe if probe.is_terminal else Console(width=max(probe.width, 180))
