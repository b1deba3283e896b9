"""Engine work counters (`EngineWork`): what the simulated engine counts per step, and the
summary every benchmark record shows (ms per step, mean batch, idle slots, computed prompt)."""

from __future__ import annotations

import asyncio
import contextlib

from autellix.backends.base import GenerationRequest
from autellix.backends.sim import SimConfig, SimulatedBackend
from autellix.wire.protocol import EngineHeartbeat, EngineWork


def test_summary_derives_per_step_figures() -> None:
    w = EngineWork(
        steps=20,
        generated_tokens=30,
        prompt_tokens=60,
        cached_prompt_tokens=15,
        busy_s=0.5,
        running_sum=30,
        idle_slot_steps=10,
    )
    s = w.summary()
    assert s["step_ms"] == 25.0 and s["mean_batch"] == 1.5
    assert s["idle_slot_fraction"] == 0.5 and s["computed_prompt_tokens"] == 45
    assert EngineWork().summary()["step_ms"] == 0.0  # no steps: no division by zero


def test_heartbeats_without_counters_still_parse() -> None:
    """Engines that do not count (or older ones) leave `work` out."""
    hb = EngineHeartbeat.model_validate(
        {"engine_id": "e", "backend": "sim", "model": "m", "max_batch": 1, "running": 0,
         "waiting": 0, "at": "2026-11-25T00:00:00Z"}
    )  # fmt: skip
    assert hb.work is None


async def _run(backend: SimulatedBackend, name: str, tokens: int) -> int:
    req = GenerationRequest(name, list(range(20)), tokens, ignore_eos=True)
    got = 0
    async with contextlib.aclosing(backend.generate(req)) as gen:
        async for chunk in gen:
            got += len(chunk.token_ids)
    return got


async def test_sim_engine_counts_its_steps() -> None:
    """Three 10-token calls on two slots: 10 steps with both slots busy, then 10 with one."""
    backend = SimulatedBackend(SimConfig(max_batch=2, token_latency_s=0.01))
    await backend.start()
    try:
        got = await asyncio.gather(*(_run(backend, f"c{i}", 10) for i in range(3)))
        assert got == [10, 10, 10]
        w = backend.stats().work
    finally:
        await backend.stop()
    assert w is not None
    assert w.steps == 20 and w.generated_tokens == 30 and w.running_sum == 30
    assert w.idle_slot_steps == 10
    assert w.prompt_tokens == 60 and w.cached_prompt_tokens <= 40  # same prompt: cache hits
    assert 0.01 * 20 * 0.9 <= w.busy_s <= 0.01 * 20 * 5  # its modelled 10 ms steps, or slower
    assert w.summary()["mean_batch"] == 1.5
