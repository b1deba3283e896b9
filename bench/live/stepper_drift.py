"""Why a SIMULATED engine runs slower than its flags: the sim backend's stepper drifts.

`SimulatedBackend._stepper` sleeps `step` seconds *after* each step's processing, so processing
time and event-loop lag add to every step. This script runs the backend alone (no services) with
`batch` concurrent calls of 100 tokens and compares the wall time with the configured one, for the
backend as shipped ("sleep") and for a deadline-based stepper ("deadline": sleep until
`previous deadline + step`, re-anchored after idle), the fix proposed in bench/live/README.md.

    python bench/live/stepper_drift.py            # default asyncio loop
    python bench/live/stepper_drift.py uvloop     # the loop the services use
"""

from __future__ import annotations

import asyncio
import sys
import time

from autellix.services.engine.backends.base import GenerationRequest, TokenChunk
from autellix.services.engine.backends.sim import SimConfig, SimulatedBackend, _mix

STEP_S, PER_SEQ_S, TOKENS = 0.0117, 0.0005, 100


class DeadlineBackend(SimulatedBackend):
    """The same model with a drift-free stepper (only the sleep differs)."""

    async def _stepper(self) -> None:
        cfg = self.config
        next_at: float | None = None
        while True:
            batch = [s for s in self._seqs if not s.done][: self.max_batch]
            if not batch:
                self._wake.clear()
                next_at = None
                await self._wake.wait()
                continue
            new_prefill = sum(s.uncached for s in batch if not s.started)
            step = (
                cfg.token_latency_s
                + cfg.step_per_seq_s * len(batch)
                + cfg.prefill_s_per_token * new_prefill
            )
            for s in batch:
                s.started = True
            now = time.monotonic()
            if next_at is None or next_at < now - step:
                next_at = now  # idle or far behind: re-anchor instead of bursting
            next_at += step
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.steps += 1
            for s in batch:
                if s.done:
                    continue
                tok = (s.state >> 17) % cfg.vocab_size
                s.state = _mix(s.state, tok)
                s.generated.append(tok)
                reason = "length" if len(s.generated) >= s.req.max_tokens else None
                cached = None
                if not s.reported_cache:
                    cached, s.reported_cache = s.cached, True
                s.out.put_nowait(TokenChunk([tok], reason, cached))
                if reason is not None:
                    s.done = True
            self._seqs = [s for s in self._seqs if not s.done]


async def _consume(backend: SimulatedBackend, i: int) -> None:
    req = GenerationRequest(request_id=f"r{i}", prompt_token_ids=[1] * 16, max_tokens=TOKENS)
    async for _chunk in backend.generate(req):
        sum(range(300))  # a little per-chunk work, like the engine runner's


async def _run(kind: str, batch: int) -> None:
    cfg = SimConfig(max_batch=batch, token_latency_s=STEP_S, step_per_seq_s=PER_SEQ_S)
    backend = (DeadlineBackend if kind == "deadline" else SimulatedBackend)(cfg)
    await backend.start()
    t0 = time.monotonic()
    await asyncio.gather(*(_consume(backend, i) for i in range(batch)))
    wall = time.monotonic() - t0
    await backend.stop()
    configured = TOKENS * (STEP_S + PER_SEQ_S * batch)
    print(f"{kind:8s} batch {batch:2d}: {wall:.3f} s vs {configured:.3f} s configured "
          f"(x{wall / configured:.3f})")  # fmt: skip


def main() -> None:
    if "uvloop" in sys.argv:
        import uvloop

        run = uvloop.run
    else:
        run = asyncio.run
    for kind in ("sleep", "deadline"):
        for batch in (1, 16):
            run(_run(kind, batch))


if __name__ == "__main__":
    main()
