"""`autellix bench calibrate`: measure the REAL vLLM engine on this machine to calibrate the
simulator's engine profile.

Why: the simulator's cost model must come from a real engine, not from guesses tuned to a
policy. For each preset this starts `AsyncLLM` on a dummy-weight Llama (`backends.tinymodel`)
and measures (`experiments`):

- decode step latency vs batch size (every request decoding, no prefill in the step),
- prefill latency vs prompt length (alone, and mixed into a running decode batch),
- cached-prefix prefill (re-send prompt + 20 generated tokens: `num_cached_tokens`),
- abort latency (cancel -> the engine's running count drops),
- resume-by-continuation (abort, re-send prompt + generated tokens; cached vs `cache_salt` miss),

then fits `t_iter = a + b*decode_seqs + c*prefill_tokens (+ d*decode_context + e*prefill^2)`
(`fit`) to the iterations the engine reported (`engine_tap`). Noise: on a shared 2-core host
vLLM binds its worker to one core; run it under `nice -n -5` (as root) so other jobs' bursts
disturb it less.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autellix.bench.reporting import command_line
from autellix.bench.vllm_calibrate.engine_tap import Probe, Runner, prompt
from autellix.bench.vllm_calibrate.experiments import (
    exp_abort,
    exp_cached_prefix,
    exp_decode,
    exp_prefill,
    exp_resume,
)
from autellix.bench.vllm_calibrate.fit import fit
from autellix.bench.vllm_calibrate.report import markdown

if TYPE_CHECKING:
    from autellix.backends.tinymodel import LlamaShape

PRESET_PLAN: dict[str, dict[str, Any]] = {
    "tiny": {
        "max_num_seqs": 64,
        "max_model_len": 4096,
        "kv_cache_gib": 0.25,
        "batches": [1, 2, 4, 8, 16, 32, 64],
        "steps": 40,
        "prefill": [128, 256, 512, 1024, 2048],
    },
    "bench": {
        "max_num_seqs": 32,
        "max_model_len": 4096,
        "kv_cache_gib": 1.0,
        "batches": [1, 2, 4, 8, 16, 32],
        "steps": 24,
        "prefill": [128, 256, 512, 1024, 2048],
    },
}


async def probe_preset(
    preset: str, plan: dict[str, Any], model_dir: Path, shape: LlamaShape, dtype: str, quick: bool
) -> dict[str, Any]:
    """Start the engine on `model_dir`, run every experiment (`quick`: decode and two prefills
    only, no fit) and fit the cost model; the `<preset>.json` report."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    probe = Probe()
    engine_kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "load_format": "dummy",
        "skip_tokenizer_init": True,
        "enforce_eager": True,
        "dtype": dtype,
        "max_model_len": plan["max_model_len"],
        "max_num_seqs": plan["max_num_seqs"],
        "enable_prefix_caching": True,
        "kv_cache_memory_bytes": int(plan["kv_cache_gib"] * (1 << 30)),
        "scheduling_policy": "priority",
        "enable_logging_iteration_details": True,
        "disable_log_stats": True,
    }
    t0 = time.perf_counter()
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(**engine_kwargs), stat_loggers=[probe.make_logger_factory()]
    )
    startup_s = time.perf_counter() - t0
    probe.tap_engine_timestamps(engine)
    cache = engine.vllm_config.cache_config
    sched = engine.vllm_config.scheduler_config
    info = {
        "num_blocks": cache.num_gpu_blocks,
        "block_size": cache.block_size,
        "kv_capacity_tokens": (cache.num_gpu_blocks or 0) * cache.block_size,
        "kv_bytes_per_token": shape.kv_bytes_per_token(),
        "max_num_batched_tokens": sched.max_num_batched_tokens,
        "chunked_prefill": sched.enable_chunked_prefill,
        "startup_s": startup_s,
    }
    print(f"[{preset}] engine up in {startup_s:.1f}s: {info}", flush=True)
    run = Runner(engine, probe, shape.vocab_size)
    results: dict[str, Any] = {}
    try:
        # Warm-up: first iterations allocate buffers and are slow.
        await asyncio.gather(*(run.run(prompt(64, shape.vocab_size), 8) for _ in range(4)))
        await run.run(prompt(1024, shape.vocab_size), 2)
        t_exp = time.perf_counter()
        results["decode"] = await exp_decode(run, plan["batches"], plan["steps"], 64)
        mid = plan["batches"][len(plan["batches"]) // 2]
        if quick:
            results["prefill"] = await exp_prefill(run, [256, 1024], background=4, bg_len=64)
            return {"preset": preset, "results": results, "engine": info}
        results["decode_long_context"] = [
            *(await exp_decode(run, [mid], plan["steps"], 512)),
            *(await exp_decode(run, [mid], plan["steps"], 1536)),
        ]
        results["prefill"] = await exp_prefill(run, plan["prefill"], background=4, bg_len=64)
        results["cached_prefix"] = await exp_cached_prefix(run, [512, 1536])
        results["abort"] = await exp_abort(run, background=4, repeats=3)
        results["resume"] = await exp_resume(run, 1024, background=4, cut=20, total=60)
        results["experiments_s"] = time.perf_counter() - t_exp
    finally:
        engine.shutdown()
    results["fit"] = fit(results, probe.records)
    print(f"[{preset}] fit: {json.dumps(results['fit'], indent=1)}", flush=True)
    return {
        "preset": preset,
        "shape": asdict(shape),
        "engine_args": engine_kwargs | {"model": f"<tmp>/{preset}"},
        "engine": info,
        "plan": plan,
        "results": results,
        "iterations": [
            {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(r).items()}
            for r in probe.records
        ],
    }


def host_info() -> dict[str, Any]:
    """Versions and the host the numbers come from."""
    import torch
    import vllm

    return {
        "python": platform.python_version(),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "note": "2 cores shared with other jobs; vLLM binds its worker to 1 core (OMP auto bind)",
    }


def calibrate(
    presets: list[str],
    out: Path,
    *,
    dtype: str = "float32",
    quick: bool = False,
    shape_overrides: dict[str, int] | None = None,
) -> list[Path]:
    """Probe each preset on a fresh engine; write `<preset>.json` and `<preset>.md` in `out`
    (nothing with `quick`). Returns the paths written."""
    from autellix.backends.tinymodel import PRESETS, write_model_dir

    written: list[Path] = []
    saved_tmpdir = os.environ.get("TMPDIR")
    for preset in presets:
        host = host_info()
        shape = replace(PRESETS[preset], **(shape_overrides or {}))
        # vLLM leaves IPC sockets in TMPDIR: give every run its own and drop it afterwards.
        with tempfile.TemporaryDirectory(prefix=f"vllm-probe-{preset}-") as tmp:
            os.environ["TMPDIR"] = tmp
            tempfile.tempdir = tmp
            try:
                model_dir = write_model_dir(Path(tmp) / preset, shape)
                report = asyncio.run(
                    probe_preset(preset, PRESET_PLAN[preset], model_dir, shape, dtype, quick)
                )
            finally:
                tempfile.tempdir = None
                if saved_tmpdir is None:
                    os.environ.pop("TMPDIR", None)
                else:
                    os.environ["TMPDIR"] = saved_tmpdir
        if quick:
            continue
        report["host"] = host | {"loadavg_at_end": os.getloadavg()}
        report["command"] = command_line()
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{preset}.json", out / f"{preset}.md"]
        paths[0].write_text(json.dumps(report, indent=1) + "\n")
        paths[1].write_text(markdown(report))
        print(markdown(report))
        written += paths
    return written
