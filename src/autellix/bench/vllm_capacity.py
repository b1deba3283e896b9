"""How many programs/s one REAL vLLM engine sustains, measured before `bench live --backend vllm`
picks its rates (when `--rates` is not given).

A probe on a fresh plain engine (FCFS) measures the decode step alone and at a full batch
(prompts of the workload's mean length, so attention over a typical context is included) and the
prefill cost per token; the simulator's analytic capacity (`sim.sweep.analytic_capacity`, the
estimate `bench live --backend sim` uses) on that measured profile gives the programs/s, and the
runs go at `loads` x it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from autellix.bench.plain_vllm import VllmEngineSpec
from autellix.sim.profile import EngineProfile
from autellix.sim.sweep import analytic_capacity
from autellix.workloads.loader import Workload


@dataclass
class VllmProbe:
    """What the probe measured on a fresh plain vLLM engine (FCFS), and the profile it implies."""

    step_alone_s: float  # one call decoding alone: seconds per token
    step_full_batch_s: float  # max_batch calls decoding together: seconds per step
    prefill_per_token_s: float  # time to first token of a lone call / its prompt tokens
    prompt_tokens: int
    decode_tokens: int
    batch: int
    kv_capacity_tokens: int | None
    startup_s: float
    wall_s: float

    def profile(self) -> EngineProfile:
        """A simulator profile with these terms (context terms folded into the measured step,
        which ran at the workload's mean prompt length)."""
        per_seq = max(0.0, (self.step_full_batch_s - self.step_alone_s) / max(1, self.batch - 1))
        return EngineProfile(
            name="vllm-probe",
            max_num_seqs=self.batch,
            kv_capacity_tokens=self.kv_capacity_tokens or 10**9,
            base_s=max(1e-6, self.step_alone_s - per_seq),
            decode_per_seq_s=per_seq,
            prefill_per_token_s=self.prefill_per_token_s,
            calibration="measured",
            source="bench live --backend vllm probe",
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "profile": asdict(self.profile())}


def _mean_prompt(workload: Workload) -> int:
    calls = [c for p in workload.programs for c in p.calls]
    return int(sum(c.prompt_tokens for c in calls) / max(1, len(calls)))


async def probe_vllm(
    spec: VllmEngineSpec, workload: Workload, *, decode_tokens: int = 32
) -> VllmProbe:
    """Measure the engine (see module docstring): decode alone, decode at a full batch (prompts
    of the workload's mean length, so attention over a typical context is included) and
    prefill per token. Random prompt ids: nothing is served from the prefix cache."""
    from autellix.backends.base import GenerationRequest

    t_start = time.monotonic()
    backend = spec.create_backend("fcfs")
    await backend.start()
    startup = time.monotonic() - t_start
    rng = random.Random(0x5EED)
    vocab = backend.vocab_size or 4096
    limit = max(16, (backend.max_model_len or 2048) - decode_tokens - 8)
    prompt_len = max(16, min(_mean_prompt(workload), limit))
    ids = iter(range(10**9))

    async def call(prompt: int, tokens: int) -> tuple[float, float]:
        """(time to first token, seconds per token after the first)."""
        req = GenerationRequest(
            request_id=f"probe-{next(ids)}",
            prompt_token_ids=[rng.randrange(100, vocab) for _ in range(prompt)],
            max_tokens=tokens,
            temperature=0.0,
            ignore_eos=True,
        )
        t0 = time.monotonic()
        first: float | None = None
        n = 0
        async with contextlib.aclosing(backend.generate(req)) as gen:
            async for chunk in gen:
                if chunk.token_ids and first is None:
                    first = time.monotonic()
                n += len(chunk.token_ids)
        end = time.monotonic()
        first = first if first is not None else end
        return first - t0, (end - first) / max(1, n - 1)

    try:
        await call(16, 4)  # warm-up (first requests pay one-off costs)
        ttft = statistics.median([(await call(prompt_len, 1))[0] for _ in range(3)])
        alone = statistics.median([(await call(prompt_len, decode_tokens))[1] for _ in range(2)])
        batch = max(1, spec.max_batch)
        full = await asyncio.gather(*(call(prompt_len, decode_tokens) for _ in range(batch)))
        step_full = statistics.median(per_token for _, per_token in full)
        kv = backend.kv_capacity_tokens
    finally:
        await backend.stop()
    return VllmProbe(
        step_alone_s=alone,
        step_full_batch_s=max(step_full, alone),
        prefill_per_token_s=max(0.0, ttft - alone) / prompt_len,
        prompt_tokens=prompt_len,
        decode_tokens=decode_tokens,
        batch=batch,
        kv_capacity_tokens=kv,
        startup_s=startup,
        wall_s=time.monotonic() - t_start,
    )


def capacity(workload: Workload, probe: VllmProbe) -> float:
    """Programs/s one engine sustains at a full batch (analytic, on the probe's profile)."""
    return analytic_capacity(workload.programs, probe.profile(), 1)
