"""The calibration's experiments on one engine: decode steps vs batch size, prefill alone and
mixed into a decode batch, a re-sent prefix from the cache, abort latency, and resume by
continuation (cached vs a `cache_salt` miss). Each returns one row per configuration and prints
a progress line.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

from autellix.bench.reporting import pct
from autellix.bench.vllm_calibrate.engine_tap import (
    Runner,
    prompt,
    start_background,
    steady_decode_dts,
    when_tokens,
)


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
                "step_ms_p10": 1e3 * pct(dts, 10),
                "step_ms_p90": 1e3 * pct(dts, 90),
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
