"""Measure a live stack before loading it: per-call control-plane delay and real step time.

Two short probes on a fresh stack, both with tiny prompts so prefill hardly matters:

* **sequential**: `n` one-token calls one after another; the client-side latency minus one
  configured engine step is what the control plane (client → frontend → JetStream → scheduler →
  Postgres → JetStream → engine → client) adds to each call.
* **saturating**: `max_batch x engines` calls of `tokens` tokens at once; the median time a call
  spends admitted in a batch, over what the engine's configured timing says a full batch takes,
  is the slowdown of the simulated engine on this (shared, two-core) machine: an `asyncio.sleep`
  stepper also spends CPU per step, and waits for the CPU when other processes hold it.

The capacity estimate is the simulator's analytic one (`sim.sweep.analytic_capacity`: engines /
mean work per program at a full batch) on the engine profile scaled by that measured slowdown,
so the default rates (30%, 80%, 120% of it) are relative to what this machine actually delivers.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from autellix.bench.engine import SimEngineTiming
from autellix.client import Client

PROMPT_TOKENS = 16


@dataclass
class ProbeResult:
    per_call_overhead_s: float  # median over sequential 1-token calls, minus one engine step
    per_call_latency_p50_s: float
    per_call_latency_p99_s: float
    step_measured_s: float  # effective step of a full batch
    step_configured_s: float
    step_scale: float  # measured / configured (>= 1 when the engine runs slower than set)
    batch: int
    tokens: int
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prompt(rng: random.Random) -> list[int]:
    return [rng.randrange(100, 30_000) for _ in range(PROMPT_TOKENS)]


async def probe_stack(
    client: Client,
    timing: SimEngineTiming,
    engines: int,
    *,
    sequential: int = 12,
    tokens: int = 64,
) -> ProbeResult:
    """Run both probes (see module docstring) and return what they measured."""
    t0 = time.monotonic()
    rng = random.Random(0xBEEF)
    lat: list[float] = []
    async with client.program(f"probe-seq-{rng.getrandbits(32):x}") as prog:
        for _ in range(sequential):
            res = await prog.call(
                prompt_token_ids=_prompt(rng),
                max_tokens=1,
                sampling={"ignore_eos": True, "temperature": 0.0},
            )
            lat.append(res.latency_s)
    lat = lat[2:] if len(lat) > 4 else lat  # first calls pay connection warm-up
    p50 = statistics.median(lat)
    overhead = max(0.0, p50 - timing.step_seconds(1, PROMPT_TOKENS))
    batch = timing.max_batch * engines

    async def one(i: int) -> float:
        async with client.program(f"probe-sat-{i}-{rng.getrandbits(32):x}") as prog:
            res = await prog.call(
                prompt_token_ids=_prompt(rng),
                max_tokens=tokens,
                sampling={"ignore_eos": True, "temperature": 0.0},
            )
        return res.timing.run_s

    runs = await asyncio.gather(*(one(i) for i in range(batch)))
    measured_run = statistics.median(runs)
    expected_run = tokens * timing.step_seconds(timing.max_batch) + (
        timing.prefill_per_token_s * PROMPT_TOKENS * timing.max_batch
    )
    sorted_lat = sorted(lat)
    return ProbeResult(
        per_call_overhead_s=overhead,
        per_call_latency_p50_s=p50,
        per_call_latency_p99_s=sorted_lat[min(len(sorted_lat) - 1, int(0.99 * len(sorted_lat)))],
        step_measured_s=measured_run / tokens,
        step_configured_s=expected_run / tokens,
        step_scale=max(1e-3, measured_run / max(1e-9, expected_run)),
        batch=batch,
        tokens=tokens,
        wall_s=time.monotonic() - t0,
    )
