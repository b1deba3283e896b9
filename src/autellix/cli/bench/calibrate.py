"""`autellix bench calibrate`: measure the REAL vLLM engine to calibrate the simulator's engine
profile (`autellix.bench.vllm_calibrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PRESETS = ("tiny", "bench")  # the presets with a measurement plan (`calibrate.PRESET_PLAN`)


def _shape(text: str) -> dict[str, int]:
    """`--shape hidden_size=512,num_hidden_layers=4`: integer fields of the preset's shape."""
    from autellix.backends.tinymodel import LlamaShape

    fields = set(LlamaShape.__dataclass_fields__)
    out: dict[str, int] = {}
    for item in (x for x in text.split(",") if x.strip()):
        key, _, value = item.partition("=")
        if key.strip() not in fields or not value.strip().isdigit():
            raise typer.BadParameter(
                f"{item!r}: expected FIELD=INTEGER with FIELD one of {', '.join(sorted(fields))}",
                param_hint="--shape",
            )
        out[key.strip()] = int(value)
    return out


def calibrate(
    preset: Annotated[
        list[str] | None,
        typer.Option(help="Dummy-weight Llama preset to measure (tiny, bench); repeat."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output directory (writes <preset>.json and <preset>.md).")
    ] = Path("bench-calibrate-results"),
    dtype: Annotated[str, typer.Option(help="Model dtype (float32: CPUs without BF16).")] = (
        "float32"
    ),
    quick: Annotated[
        bool, typer.Option(help="Decode sweep and two prefills only, printed, no files.")
    ] = False,
    shape: Annotated[
        str, typer.Option(help="Override the preset's shape: hidden_size=512,... .")
    ] = "",
) -> None:
    """REAL vLLM engine: decode step vs batch, prefill alone and mixed, cached prefix, abort and
    resume costs, and the per-iteration cost model fitted to them (the simulator's profile)."""
    presets = preset or list(PRESETS)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)}: choose from {', '.join(PRESETS)}", param_hint="--preset"
        )
    overrides = _shape(shape)
    from autellix.bench.vllm_calibrate.calibrate import calibrate as run_calibration

    paths = run_calibration(presets, out, dtype=dtype, quick=quick, shape_overrides=overrides)
    if paths:
        typer.echo("wrote " + ", ".join(str(p) for p in paths))
