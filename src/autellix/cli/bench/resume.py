"""`autellix bench resume`: what one preemption costs the preempted call through the whole stack
on the REAL vLLM engine, with prefix caching on and off (`autellix.bench.resume`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from autellix.cli.bench.options import (
    KvCacheGibOpt,
    MaxModelLenOpt,
    ModelDirOpt,
    VllmModelOpt,
    ints,
    make_console,
)
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt


def resume(
    out: Annotated[
        Path, typer.Option(help="Output directory (writes resume.json, resume.md).")
    ] = Path("bench-resume-results"),
    model: VllmModelOpt = "dummy:bench",
    sizes: Annotated[
        str, typer.Option(help="Comma-separated prompt lengths (tokens) of the preempted call.")
    ] = "256,1024",
    repeat: Annotated[int, typer.Option(min=1, help="Trials per prompt length.")] = 3,
    max_model_len: MaxModelLenOpt = 4096,
    kv_cache_gib: KvCacheGibOpt = 1.0,
    model_dir: ModelDirOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for the prompts' token ids.")] = 0,
    uncached: Annotated[
        bool, typer.Option(help="Also run the trials on an engine with prefix caching off.")
    ] = True,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """REAL vLLM engine, batch 1: a streaming call is demoted and preempted by a one-token call,
    then resumes; the resume delay and the stall in its stream, per prompt length."""
    from autellix.bench.resume import ResumeConfig, markdown, run_resume, write_resume

    console = make_console()
    cfg = ResumeConfig(
        model=model,
        sizes=ints(sizes),
        repeat=repeat,
        max_model_len=max_model_len,
        kv_cache_gib=kv_cache_gib or None,
        model_dir=str(model_dir) if model_dir else None,
        seed=seed,
        uncached=uncached,
    )
    payload = asyncio.run(
        run_resume(
            cfg,
            nats_url=nats_url,
            database_url=database_url,
            on_trial=lambda row: console.print(json.dumps(row), highlight=False),
        )
    )
    paths = write_resume(payload, out)
    console.print(markdown(payload), highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths))
