"""Measure the real vLLM V1 engine on this machine to calibrate the simulator's engine profile.

Why: the simulator's cost model must come from a real engine, not from guesses tuned to a policy.
This probe starts `AsyncLLM` on a dummy-weight Llama (see `autellix.tinymodel`) and measures:

- decode step latency vs batch size (every request decoding, no prefill in the step),
- prefill latency vs prompt length (alone, and mixed into a running decode batch),
- cached-prefix prefill (re-send prompt + 20 generated tokens: `num_cached_tokens`),
- abort latency (cancel -> the engine's running count drops),
- resume-by-continuation (abort, re-send prompt + generated tokens; cached vs `cache_salt` miss),

then fits `t_iter = a + b*decode_seqs + c*prefill_tokens (+ d*decode_context + e*prefill²)`.
Per-iteration counts come from vLLM's own `SchedulerIterationDetails` (custom stat logger); the
time of an iteration is the gap between the engine-side timestamps of consecutive output batches
while the engine had work, so it includes scheduling and IPC overhead, which the simulator must
model too. Two fits: "low" (10th percentile: the engine when it has its core) and "median".

Run:  python bench/vllm_probe.py --preset tiny --preset bench   (writes bench/vllm_probe/)
Noise: this machine has 2 cores shared with other jobs; vLLM binds its worker to one core. Run it
under `nice -n -5` (as root) so other jobs' bursts disturb it less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "vllm_probe"
RNG = random.Random(20250213)


@dataclass(slots=True)
class IterRecord:
    """One engine iteration as seen by the client."""

    t: float  # client monotonic time the iteration's outputs were processed
    dt: float | None  # engine-side gap to the previous iteration, if the engine was busy
    te: float  # engine-side monotonic time the iteration's outputs were made
    ctx_reqs: int
    ctx_tokens: int  # prefill tokens scheduled in this iteration
    gen_reqs: int  # decoding sequences in this iteration
    elapsed_ms: float  # vLLM's own timer (waits on the worker; excludes scheduling)
    context_tokens: int  # sum of context lengths of decoding sequences (client estimate)
    running: int
    waiting: int
    kv_usage: float
    tag: str


@dataclass
class Probe:
    """Shared state between the stat logger (engine side) and the experiments (client side)."""

    records: list[IterRecord] = field(default_factory=list)
    tag: str = "warmup"
    busy: bool = False  # the previous iteration left work in the engine
    last_te: float = 0.0
    engine_ts: float = 0.0  # EngineCoreOutputs.timestamp of the batch being processed
    contexts: dict[str, int] = field(default_factory=dict)  # decoding request -> context length

    def make_logger_factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        probe = self

        class _Recorder(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is None:
                    return
                now = time.perf_counter()
                te = probe.engine_ts or now
                details = scheduler_stats.iteration_details
                if details is not None and not details.is_dummy:
                    probe.records.append(
                        IterRecord(
                            t=now,
                            dt=(te - probe.last_te) if probe.busy else None,
                            te=te,
                            ctx_reqs=details.num_ctx_requests,
                            ctx_tokens=details.num_ctx_tokens,
                            gen_reqs=details.num_generation_requests,
                            elapsed_ms=details.elapsed_ms,
                            context_tokens=sum(probe.contexts.values()),
                            running=scheduler_stats.num_running_reqs,
                            waiting=scheduler_stats.num_waiting_reqs,
                            kv_usage=scheduler_stats.kv_cache_usage,
                            tag=probe.tag,
                        )
                    )
                    probe.last_te = te
                probe.busy = (
                    scheduler_stats.num_running_reqs + scheduler_stats.num_waiting_reqs
                ) > 0

            def log_engine_initialized(self) -> None:
                return None

        return lambda vllm_config, engine_index=0: _Recorder(vllm_config, engine_index)

    def tap_engine_timestamps(self, engine: Any) -> None:
        """Read each output batch's engine-side timestamp (probe only, not the backend): client
        receive times bunch up whenever the client process is descheduled, engine times do not."""
        processor = engine.output_processor
        original = processor.process_outputs
        probe = self

        def tapped(outputs: Any, engine_core_timestamp: Any = None, *args: Any, **kw: Any) -> Any:
            if engine_core_timestamp:
                probe.engine_ts = engine_core_timestamp
            return original(outputs, engine_core_timestamp, *args, **kw)

        processor.process_outputs = tapped


@dataclass(slots=True)
class ReqResult:
    submit: float
    token_times: list[float]
    token_ids: list[int]
    cached: int | None
    finish: str | None


def prompt(n: int, vocab: int) -> list[int]:
    """Distinct random token ids, so unrelated requests never share a cached prefix by accident."""
    return [RNG.randrange(10, vocab - 10) for _ in range(n)]


class Runner:
    """Thin helper around one AsyncLLM for the experiments."""

    def __init__(self, engine: Any, probe: Probe, vocab: int) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.engine = engine
        self.probe = probe
        self.vocab = vocab
        self._sp = SamplingParams
        self._delta = RequestOutputKind.DELTA
        self._n = 0
        self.max_batched_tokens = engine.vllm_config.scheduler_config.max_num_batched_tokens

    def params(self, max_tokens: int) -> Any:
        return self._sp(
            max_tokens=max_tokens,
            ignore_eos=True,
            temperature=0.0,
            output_kind=self._delta,
            detokenize=False,
        )

    async def run(
        self,
        ids: list[int],
        max_tokens: int,
        *,
        salt: str | None = None,
        on_token: Any = None,
    ) -> ReqResult:
        self._n += 1
        rid = f"p{self._n}"
        body: dict[str, Any] = {"prompt_token_ids": ids}
        if salt is not None:
            body["cache_salt"] = salt
        res = ReqResult(time.perf_counter(), [], [], None, None)
        try:
            async for out in self.engine.generate(body, self.params(max_tokens), rid):
                now = time.perf_counter()
                if res.cached is None and out.num_cached_tokens is not None:
                    res.cached = out.num_cached_tokens
                new = list(out.outputs[0].token_ids)
                res.token_ids.extend(new)
                res.token_times.extend([now] * len(new))
                self.probe.contexts[rid] = len(ids) + len(res.token_ids)
                if out.finished:
                    res.finish = out.outputs[0].finish_reason
                if on_token is not None:
                    on_token(res)
        finally:
            self.probe.contexts.pop(rid, None)
        return res


def start_background(
    run: Runner, n: int, prompt_len: int, max_tokens: int
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """`n` loops each keeping one short request decoding until the event is set."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await run.run(prompt(prompt_len, run.vocab), max_tokens)

    return stop, [asyncio.create_task(loop()) for _ in range(n)]


def when_tokens(n: int, event: asyncio.Event, holder: dict[str, ReqResult]) -> Any:
    """An `on_token` callback: remember the result, set `event` once it has `n` tokens."""

    def on_token(res: ReqResult) -> None:
        holder["r"] = res
        if len(res.token_ids) >= n:
            event.set()

    return on_token


def steady_decode_dts(records: list[IterRecord], tag: str, batch: int) -> list[float]:
    return [
        r.dt
        for r in records
        if r.tag == tag and r.dt is not None and r.ctx_tokens == 0 and r.gen_reqs == batch
    ]


async def exp_decode(
    run: Runner, batches: list[int], steps: int, prompt_len: int, rounds: int = 2
) -> list[dict]:
    """Every request decoding, nothing else in the step; rounds alternate the sweep direction so
    slow drifts in background load do not line up with batch size."""
    pooled: dict[int, list[float]] = {b: [] for b in batches}
    elapsed: dict[int, list[float]] = {b: [] for b in batches}
    for rnd in range(rounds):
        for b in batches if rnd % 2 == 0 else batches[::-1]:
            tag = f"decode-b{b}-p{prompt_len}-r{rnd}"
            run.probe.tag = tag
            await asyncio.gather(*(run.run(prompt(prompt_len, run.vocab), steps) for _ in range(b)))
            pooled[b] += steady_decode_dts(run.probe.records, tag, b)
            elapsed[b] += [
                r.elapsed_ms
                for r in run.probe.records
                if r.tag == tag and r.ctx_tokens == 0 and r.gen_reqs == b
            ]
    rows = []
    for b in batches:
        dts, el = pooled[b], elapsed[b]
        rows.append(
            {
                "batch": b,
                "prompt_len": prompt_len,
                "steps_per_request": steps,
                "n_steps": len(dts),
                "step_ms_median": 1e3 * statistics.median(dts),
                "step_ms_p10": 1e3 * float(np.percentile(dts, 10)),
                "step_ms_p90": 1e3 * float(np.percentile(dts, 90)),
                "vllm_elapsed_ms_median": statistics.median(el) if el else None,
            }
        )
        print(
            f"  decode b={b:3d} p={prompt_len}: {rows[-1]['step_ms_median']:.2f} ms/step",
            flush=True,
        )
    return rows


async def exp_prefill(run: Runner, lengths: list[int], background: int, bg_len: int) -> list[dict]:
    """Prefill alone (TTFT on an idle engine) and mixed into a running decode batch."""
    rows = []
    for n in lengths:
        run.probe.tag = f"prefill-idle-{n}"
        ttfts = []
        for _ in range(2):
            r = await run.run(prompt(n, run.vocab), 1)
            ttfts.append(r.token_times[0] - r.submit)
        # Mixed: keep `background` sequences decoding, inject the prompt, read its iteration.
        tag = f"prefill-mixed-{n}"
        run.probe.tag = tag
        stop, bg_tasks = start_background(run, background, bg_len, 16)
        await asyncio.sleep(0.3)
        ttft_mixed = []
        for _ in range(3):
            r = await run.run(prompt(n, run.vocab), 1)
            ttft_mixed.append(r.token_times[0] - r.submit)
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*bg_tasks)
        # The injected prompt's iteration: the only one with at least n (or a full chunk of)
        # prefill tokens; background prompts are 64 tokens.
        need = min(n, run.max_batched_tokens - background)
        mixed = [
            x
            for x in run.probe.records
            if x.tag == tag and x.dt is not None and x.ctx_tokens >= need and x.gen_reqs > 0
        ]
        rows.append(
            {
                "prompt_len": n,
                "ttft_idle_ms": [1e3 * t for t in ttfts],
                "ttft_idle_ms_min": 1e3 * min(ttfts),
                "mixed_iter_ms": [1e3 * x.dt for x in mixed if x.dt is not None],
                "mixed_decode_seqs": [x.gen_reqs for x in mixed],
                "mixed_ctx_tokens": [x.ctx_tokens for x in mixed],
                "ttft_mixed_ms": [1e3 * t for t in ttft_mixed],
            }
        )
        print(
            f"  prefill n={n}: idle ttft {1e3 * min(ttfts):.1f} ms, "
            f"mixed {rows[-1]['mixed_iter_ms']}",
            flush=True,
        )
    return rows


async def exp_cached_prefix(run: Runner, lengths: list[int]) -> list[dict]:
    rows = []
    for n in lengths:
        run.probe.tag = f"cached-{n}"
        base = prompt(n, run.vocab)
        first = await run.run(base, 20)
        cont = base + first.token_ids
        hit = await run.run(cont, 20)
        miss = await run.run(cont, 20, salt=f"miss-{n}-{time.time()}")
        rows.append(
            {
                "prompt_len": n,
                "resent_len": len(cont),
                "first_ttft_ms": 1e3 * (first.token_times[0] - first.submit),
                "resent_cached_tokens": hit.cached,
                "resent_ttft_ms": 1e3 * (hit.token_times[0] - hit.submit),
                "salted_cached_tokens": miss.cached,
                "salted_ttft_ms": 1e3 * (miss.token_times[0] - miss.submit),
            }
        )
        print(f"  cached {n}: {rows[-1]}", flush=True)
    return rows


async def exp_abort(run: Runner, background: int, repeats: int) -> list[dict]:
    """Cancel a running stream; time until the cancel returns and until vLLM's running count
    drops (its next step no longer runs the victim). Background requests are long, so nothing
    else joins or leaves the batch meanwhile."""
    rows = []
    for i in range(repeats):
        tag = f"abort-{i}"
        run.probe.tag = tag
        bg = [
            asyncio.create_task(run.run(prompt(64, run.vocab), 10_000)) for _ in range(background)
        ]
        got, holder = asyncio.Event(), {}
        victim = asyncio.create_task(
            run.run(prompt(256, run.vocab), 10_000, on_token=when_tokens(8, got, holder))
        )
        await got.wait()
        t0 = time.perf_counter()
        victim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await victim
        t_ret = time.perf_counter()
        while True:
            freed = [
                r
                for r in run.probe.records
                if r.tag == tag and r.t > t0 and r.running == background and r.ctx_reqs == 0
            ]
            if freed:
                t_free = freed[0].t
                break
            await asyncio.sleep(0.001)
        for t in bg:
            t.cancel()
        await asyncio.gather(*bg, return_exceptions=True)
        step = steady_decode_dts(run.probe.records, tag, background + 1)
        rows.append(
            {
                "cancel_return_ms": 1e3 * (t_ret - t0),
                "slot_free_ms": 1e3 * (t_free - t0),
                "step_ms_median": 1e3 * statistics.median(step) if step else None,
            }
        )
        print(f"  abort {i}: {rows[-1]}", flush=True)
    return rows


async def exp_resume(
    run: Runner, prompt_len: int, background: int, cut: int, total: int
) -> list[dict]:
    """Preempt by abort at `cut` tokens, resume as a continuation; cached vs forced-miss."""
    rows = []
    for mode in ("cached", "salted", "cached", "salted"):
        tag = f"resume-{mode}"
        run.probe.tag = tag
        stop, bg_tasks = start_background(run, background, 64, 32)
        await asyncio.sleep(0.2)
        got, holder = asyncio.Event(), {}
        base = prompt(prompt_len, run.vocab)
        victim = asyncio.create_task(run.run(base, total, on_token=when_tokens(cut, got, holder)))
        await got.wait()
        t0 = time.perf_counter()
        victim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await victim
        done = holder["r"]
        last_tok = done.token_times[-1]
        cont = base + done.token_ids
        salt = f"resume-{time.time()}" if mode == "salted" else None
        res = await run.run(cont, total - len(done.token_ids), salt=salt)
        stop.set()
        await asyncio.gather(*bg_tasks)
        rows.append(
            {
                "mode": mode,
                "prompt_len": prompt_len,
                "generated_before_abort": len(done.token_ids),
                "resume_prompt_len": len(cont),
                "cached_tokens": res.cached,
                "abort_to_first_new_token_ms": 1e3 * (res.token_times[0] - t0),
                "stall_seen_by_caller_ms": 1e3 * (res.token_times[0] - last_tok),
                "resume_ttft_ms": 1e3 * (res.token_times[0] - res.submit),
                "remaining_tokens": len(res.token_ids),
            }
        )
        print(f"  resume {mode}: {rows[-1]}", flush=True)
    return rows


FIT_TERMS = {
    "abc": ("decode_seqs", "prefill_tokens"),
    "abcd": ("decode_seqs", "prefill_tokens", "context_k_tokens"),
    "abcde": ("decode_seqs", "prefill_tokens", "context_k_tokens", "prefill_sq_m"),
}
COEF_NAMES = {
    "decode_seqs": "b_ms_per_decode_seq",
    "prefill_tokens": "c_ms_per_prefill_token",
    "context_k_tokens": "d_ms_per_1k_decode_context_tokens",
    "prefill_sq_m": "e_ms_per_prefill_tokens_squared_millions",
}


def design_points(results: dict[str, Any], stat: str) -> list[dict[str, float]]:
    """One point per decode configuration and per mixed prefill (4 decoding + one prompt).

    `stat="low"` takes each configuration's 10th-percentile step and fastest prefill sample: the
    engine's cost when it has its core (other jobs on the shared cores only ever add time);
    `stat="median"` takes the median step and every prefill sample: this machine as it was.
    Features: decode sequences in the step, prefill tokens in the step, the decoding sequences'
    summed context (thousands of tokens), and prefill tokens squared (millions; attention over the
    new chunk itself grows quadratically on CPU).
    """
    pts = []
    for row in results["decode"] + results.get("decode_long_context", []):
        b, p, steps = row["batch"], row["prompt_len"], row["steps_per_request"]
        pts.append(
            {
                "y": row["step_ms_p10" if stat == "low" else "step_ms_median"],
                "decode_seqs": b,
                "prefill_tokens": 0,
                "context_k_tokens": b * (p + steps / 2) / 1000,
                "prefill_sq_m": 0.0,
            }
        )
    for row in results["prefill"]:
        samples = list(
            zip(
                row["mixed_iter_ms"], row["mixed_decode_seqs"], row["mixed_ctx_tokens"], strict=True
            )
        )
        if stat == "low" and samples:
            samples = [min(samples)]
        for y, g, c in samples:
            pts.append(
                {
                    "y": y,
                    "decode_seqs": g,
                    "prefill_tokens": c,
                    "context_k_tokens": g * (64 + 8) / 1000,
                    "prefill_sq_m": c * c / 1e6,
                }
            )
    return pts


def iteration_points(records: list[IterRecord]) -> list[dict[str, float]]:
    return [
        {
            "y": r.dt * 1e3,
            "decode_seqs": r.gen_reqs,
            "prefill_tokens": r.ctx_tokens,
            "context_k_tokens": r.context_tokens / 1000,
            "prefill_sq_m": r.ctx_tokens**2 / 1e6,
        }
        for r in records
        if r.dt is not None and r.tag != "warmup"
    ]


def _predict(coef: dict[str, float], terms: tuple[str, ...], pt: dict[str, float]) -> float:
    return coef["a_ms"] + sum(coef[COEF_NAMES[t]] * pt[t] for t in terms)


def fit(results: dict[str, Any], records: list[IterRecord]) -> dict[str, Any]:
    """Weighted least squares (relative error) on the design points, per statistic and term set;
    checked on every busy iteration the probe saw (noise from other jobs included)."""
    its = iteration_points(records)
    out: dict[str, Any] = {"n_iterations": len(its)}
    for stat in ("low", "median"):
        pts = design_points(results, stat)
        y = np.array([p["y"] for p in pts])
        w = 1.0 / np.maximum(y, 1e-3)
        per: dict[str, Any] = {"n_design_points": len(pts)}
        for name, terms in FIT_TERMS.items():
            x = np.column_stack([np.ones_like(y), *[[p[t] for p in pts] for t in terms]])
            sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
            coef = {"a_ms": float(sol[0])} | {
                COEF_NAMES[t]: float(v) for t, v in zip(terms, sol[1:], strict=True)
            }
            rel_design = [abs(_predict(coef, terms, p) - p["y"]) / p["y"] for p in pts]
            rel_iter = [abs(_predict(coef, terms, p) - p["y"]) / max(p["y"], 1e-3) for p in its]
            per[name] = coef | {
                "median_rel_err_design": float(np.median(rel_design)),
                "max_rel_err_design": float(np.max(rel_design)),
                "median_rel_err_iterations": float(np.median(rel_iter)) if rel_iter else None,
            }
        out[stat] = per
    return out


SHAPES: dict[str, Any] = {}  # --shape overrides of a preset's shape (to search for a bench size)

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
    preset: str, plan: dict[str, Any], model_dir: Path, dtype: str, quick: bool
) -> dict[str, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from autellix.tinymodel import PRESETS

    shape = SHAPES.get(preset, PRESETS[preset])
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


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    e = report["engine"]
    lines = [
        f"## vLLM probe: preset `{report['preset']}` (real vLLM {report['host']['vllm']}, CPU)",
        "",
        f"shape: {report['shape']}",
        "",
        f"max_num_seqs {report['plan']['max_num_seqs']}, block size {e['block_size']}, "
        f"KV capacity {e['kv_capacity_tokens']} tokens ({e['num_blocks']} blocks, "
        f"{report['plan']['kv_cache_gib']} GiB, {e['kv_bytes_per_token']} B/token), "
        f"max_num_batched_tokens {e['max_num_batched_tokens']}, start-up {e['startup_s']:.1f} s",
        "",
        "| decode batch | prompt | steps | step ms (median) | p10 | p90 | vLLM elapsed ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["decode"] + r["decode_long_context"]:
        lines.append(
            f"| {row['batch']} | {row['prompt_len']} | {row['n_steps']} | "
            f"{row['step_ms_median']:.2f} | {row['step_ms_p10']:.2f} | {row['step_ms_p90']:.2f} | "
            f"{row['vllm_elapsed_ms_median']:.2f} |"
        )
    lines += [
        "",
        "| prompt tokens | TTFT idle ms (min of 2) | mixed iterations ms (+4 decoding) |",
        "|---:|---:|---|",
    ]
    for row in r["prefill"]:
        mixed = ", ".join(
            f"{x:.1f} ({c} tok)"
            for x, c in zip(row["mixed_iter_ms"], row["mixed_ctx_tokens"], strict=True)
        )
        lines.append(f"| {row['prompt_len']} | {row['ttft_idle_ms_min']:.1f} | {mixed} |")
    lines += [
        "",
        "| prompt | re-sent | cached tokens | TTFT first ms | TTFT re-sent ms "
        "| TTFT salted (miss) ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["cached_prefix"]:
        lines.append(
            f"| {row['prompt_len']} | {row['resent_len']} | {row['resent_cached_tokens']} | "
            f"{row['first_ttft_ms']:.1f} | {row['resent_ttft_ms']:.1f} | "
            f"{row['salted_ttft_ms']:.1f} |"
        )
    lines += [
        "",
        "| abort: cancel returns ms | slot free ms | decode step ms |",
        "|---:|---:|---:|",
    ]
    for row in r["abort"]:
        lines.append(
            f"| {row['cancel_return_ms']:.2f} | {row['slot_free_ms']:.1f} | "
            f"{row['step_ms_median']:.1f} |"
        )
    lines += [
        "",
        "| resume | prompt+gen | cached | caller stall ms | resume TTFT ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["resume"]:
        lines.append(
            f"| {row['mode']} | {row['resume_prompt_len']} | {row['cached_tokens']} | "
            f"{row['stall_seen_by_caller_ms']:.1f} | {row['resume_ttft_ms']:.1f} |"
        )
    for stat, what in (
        ("low", "p10 decode steps / fastest prefill: the engine when it has its core"),
        ("median", "median decode steps / all prefill samples: this shared machine as it was"),
    ):
        f = r["fit"][stat]
        lines += [
            "",
            f"Per-iteration latency fit, **{stat}** ({what}); ms, weighted least squares on "
            f"{f['n_design_points']} design points, checked on {r['fit']['n_iterations']} "
            "busy iterations:",
            "",
            "| terms | formula | median rel err (design) | max (design) | median (all iters) |",
            "|---|---|---:|---:|---:|",
        ]
        for name, terms in FIT_TERMS.items():
            c = f[name]
            formula = f"{c['a_ms']:.3f}" + "".join(
                f" {'+' if c[COEF_NAMES[t]] >= 0 else '-'} {abs(c[COEF_NAMES[t]]):.5f}*{t}"
                for t in terms
            )
            lines.append(
                f"| {name} | t = {formula} | {c['median_rel_err_design']:.3f} | "
                f"{c['max_rel_err_design']:.3f} | {c['median_rel_err_iterations']:.3f} |"
            )
    lines += [
        "",
        f"Command: `{report['command']}`; "
        f"load average at start {report['host']['loadavg_at_start']}"
        " (2 shared cores: expect ±30% noise per iteration).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", choices=sorted(PRESET_PLAN), default=None)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--dtype", default="float32", help="float32: no AVX512-BF16 here")
    parser.add_argument("--quick", action="store_true", help="decode + 2 prefills only, no files")
    parser.add_argument("--shape", default="", help="override shape fields: hidden_size=512,...")
    args = parser.parse_args()
    presets = args.preset or ["tiny", "bench"]
    args.out.mkdir(parents=True, exist_ok=True)
    from autellix.tinymodel import PRESETS, make_preset, write_model_dir

    saved_tmpdir = os.environ.get("TMPDIR")
    for preset in presets:
        host = host_info()
        if args.shape:
            fields = {k: int(v) for k, v in (kv.split("=") for kv in args.shape.split(","))}
            SHAPES[preset] = replace(PRESETS[preset], **fields)
        # vLLM leaves IPC sockets in TMPDIR: give every run its own and drop it afterwards.
        with tempfile.TemporaryDirectory(prefix=f"vllm-probe-{preset}-") as tmp:
            os.environ["TMPDIR"] = tmp
            tempfile.tempdir = tmp
            model_dir = (
                write_model_dir(Path(tmp) / preset, SHAPES[preset])
                if preset in SHAPES
                else make_preset(Path(tmp) / preset, preset)
            )
            report = asyncio.run(
                probe_preset(preset, PRESET_PLAN[preset], model_dir, args.dtype, args.quick)
            )
            tempfile.tempdir = None
            if saved_tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_tmpdir
        if args.quick:
            continue
        report["host"] = host | {"loadavg_at_end": os.getloadavg()}
        report["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        (args.out / f"{preset}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / f"{preset}.md").write_text(markdown(report))
        print(markdown(report))


if __name__ == "__main__":
    main()
