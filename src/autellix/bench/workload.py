"""Workloads for live runs: the paper's program shapes, scaled down to minutes on two cores.

A live run replays every program in real time, so the paper's sizes (a LATS program is ~160
calls and ~12k output tokens; the mixed workload averages ~4k output tokens per program) would
take hours per arrival rate on one simulated engine. `LIVE_OPTIONS` keeps what drives the
scheduling results -- each kind's structure (chat turns, function-calling steps with tool time,
tree search with 5 parallel threads and joins), long tails within each kind, and a size gap of
about 4-5x between kinds -- and shrinks absolute sizes:

| kind     | paper (calls x out tokens)   | live (mean calls x out tokens)     |
|----------|------------------------------|------------------------------------|
| ShareGPT | 6.66 x 277                   | ~3.7 x 37 (4 turns, 40-token replies) |
| BFCL     | 10.75 x 34                   | ~5.8 x 20 (2.5 turns, 20-token steps) |
| LATS     | 159.7 x 73 (31 iterations)   | ~26 x 25 (3 iterations mean, max 8)   |

Tool times are shortened the same way (BFCL 0.1 s -> 0.05 s, LATS 0.5 s -> 0.1 s) and contexts
are capped at 2,048 tokens. Prompts keep their prefix structure (what the prefix cache reuses).
Any field can be overridden (`--workload-option KEY=VALUE`), and `--paper-sizes` uses the
unscaled defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autellix.workloads import WorkloadOptions, load_workload
from autellix.workloads.loader import Workload
from autellix.workloads.options import override_options

LIVE_OPTIONS = WorkloadOptions(
    sharegpt_calls_mean=4.0,
    sharegpt_calls_max=12,
    sharegpt_user_mean=96.0,
    sharegpt_output_mean=40.0,
    sharegpt_token_cap=512,
    bfcl_turns_mean=2.5,
    bfcl_turns_max=6,
    bfcl_output_mean=20.0,
    bfcl_tool_s=0.05,
    lats_calls_mean=33.0,
    lats_iterations_max=8,
    lats_output_mean=24.0,
    lats_output_cap=128,
    lats_tool_s=0.1,
    max_context_tokens=2048,
)


def live_options(
    overrides: dict[str, Any] | None = None, paper_sizes: bool = False
) -> WorkloadOptions:
    """The scaled options (or the paper's, with `paper_sizes`) with `overrides` applied."""
    return override_options(WorkloadOptions() if paper_sizes else LIVE_OPTIONS, overrides or {})


def load_live_workload(
    name: str,
    programs: int,
    seed: int,
    *,
    data: list[Path] | None = None,
    tokenizer: Path | None = None,
    mix: dict[str, float] | None = None,
    sample: str = "reservoir",
    options: WorkloadOptions = LIVE_OPTIONS,
) -> Workload:
    """`load_workload` with live-run options (programs arrive at 0; arrivals set per rate)."""
    return load_workload(
        name,
        programs,
        seed,
        data=list(data or []),
        tokenizer=tokenizer,
        options=options,
        mix=mix,
        sample_method=sample,
    )
