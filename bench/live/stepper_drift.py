"""Why a SIMULATED engine ran slower than its flags: a stepper that sleeps after each step drifts.

The sim backend's stepper used to sleep `step` seconds *after* each step's processing, so
processing time and event-loop lag added to every step. It now waits for deadlines
(`SimulatedBackend._pace`: sleep until `previous deadline + step`, re-anchored after idle). This
script runs the backend alone (no services) with `batch` concurrent calls of 100 tokens and
compares the wall time with the configured one, for the old pacing ("sleep", `SleepBackend`
below: only `_pace` differs) and the shipped one ("deadline").

    python bench/live/stepper_drift.py            # default asyncio loop
    python bench/live/stepper_drift.py uvloop     # the loop the services use
"""

from __future__ import annotations

import asyncio
import sys
import time

from autellix.services.engine.backends.base import GenerationRequest
from autellix.services.engine.backends.sim import SimConfig, SimulatedBackend

STEP_S, PER_SEQ_S, TOKENS = 0.0117, 0.0005, 100


class SleepBackend(SimulatedBackend):
    """The old pacing: sleep a whole step after each step's processing."""

    async def _pace(self, step: float) -> None:
        await asyncio.sleep(step)


async def _consume(backend: SimulatedBackend, i: int) -> None:
    req = GenerationRequest(request_id=f"r{i}", prompt_token_ids=[1] * 16, max_tokens=TOKENS)
    async for _chunk in backend.generate(req):
        sum(range(300))  # a little per-chunk work, like the engine runner's


async def _run(kind: str, batch: int) -> None:
    cfg = SimConfig(max_batch=batch, token_latency_s=STEP_S, step_per_seq_s=PER_SEQ_S)
    backend = (SleepBackend if kind == "sleep" else SimulatedBackend)(cfg)
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
