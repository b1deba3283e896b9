"""The engines' own work counters during a live run, from their heartbeats (`EngineWork`).

Why: two runs of the same programs can differ because the engine ran slower steps (CPU
contention), ran fewer calls per step (empty slots), or computed more prompt tokens (fewer
prefix-cache hits); only the engine sees which. The vLLM backend counts every step; the engine
service puts the cumulative counters in each heartbeat; this listener keeps the latest per
engine and, at the end, waits for one more heartbeat so the last second is in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats

from autellix.wire.protocol import EngineWork, Subjects, heartbeats_in


class EngineWorkListener:
    """Latest `EngineWork` per engine id, while subscribed."""

    def __init__(self) -> None:
        self.latest: dict[str, EngineWork] = {}
        self._beat = asyncio.Event()

    async def on_msg(self, msg: Any) -> None:
        try:
            beats = heartbeats_in(msg.data)
        except ValueError:
            return
        for hb in beats:
            if hb.work is not None:
                self.latest[hb.engine_id] = hb.work
                self._beat.set()

    async def settle(self, wait_s: float = 2.5) -> None:
        """Wait for the next heartbeat with counters (or `wait_s`)."""
        self._beat.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._beat.wait()

    def summary(self) -> dict[str, dict[str, float | int]] | None:
        """Per engine: `EngineWork.summary()`; None when no engine counted (sim backend)."""
        return {e: w.summary() for e, w in sorted(self.latest.items())} or None


@contextlib.asynccontextmanager
async def listen_engine_work(nats_url: str, namespace: str) -> AsyncIterator[EngineWorkListener]:
    """Subscribe to the namespace's heartbeats for the duration of the block."""
    listener = EngineWorkListener()
    nc = await nats.connect(nats_url)
    try:
        await nc.subscribe(Subjects(namespace).heartbeat, cb=listener.on_msg)
        yield listener
    finally:
        await nc.close()
