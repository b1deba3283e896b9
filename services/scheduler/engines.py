"""Which engines are alive and how loaded they are, from their heartbeats (kept in memory).

Why memory, not a Postgres query per decision: heartbeats arrive on NATS every second from every
engine anyway, and a dictionary lookup costs nothing on the dispatch path. Postgres still has the
`engines` rows: replicas seed this registry from them at start-up, and the reaper uses them (one
clock, the database's) to declare an engine lost.

`pending` counts dispatches this replica made since the engine's last heartbeat, so a burst of
calls between two heartbeats spreads over engines instead of piling onto the one that looked
emptiest a second ago.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from autellix.protocol import EngineHeartbeat
from autellix.store.queries import EngineRow


@dataclass
class EngineView:
    id: str
    backend: str
    model: str
    max_batch: int
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    queue_depths: list[int] = field(default_factory=list)
    draining: bool = False
    seen: float = field(default_factory=time.monotonic)
    pending: int = 0

    @property
    def load(self) -> int:
        """Calls on (or on their way to) this engine."""
        return self.running + self.waiting + self.pending

    @property
    def utilization(self) -> float:
        return self.load / max(1, self.max_batch)


class EngineRegistry:
    def __init__(self, stale_after_s: float = 3.0) -> None:
        self.stale_after_s = stale_after_s
        self._engines: dict[str, EngineView] = {}

    def on_heartbeat(self, hb: EngineHeartbeat) -> None:
        self._engines[hb.engine_id] = EngineView(
            id=hb.engine_id,
            backend=hb.backend,
            model=hb.model,
            max_batch=hb.max_batch,
            running=hb.running,
            waiting=hb.waiting,
            kv_cache_usage=hb.kv_cache_usage,
            queue_depths=list(hb.queue_depths),
            draining=hb.draining,
        )

    def seed(self, rows: list[EngineRow]) -> None:
        now = time.monotonic()
        for r in rows:
            if r.id not in self._engines:
                self._engines[r.id] = EngineView(
                    id=r.id,
                    backend=r.backend,
                    model=r.model,
                    max_batch=r.max_batch,
                    running=r.running,
                    waiting=r.waiting,
                    kv_cache_usage=r.kv_cache_usage,
                    seen=now - r.age_s,
                )

    def live(self) -> list[EngineView]:
        cutoff = time.monotonic() - self.stale_after_s
        return [e for e in self._engines.values() if e.seen >= cutoff and not e.draining]

    def note_dispatch(self, engine_id: str) -> None:
        e = self._engines.get(engine_id)
        if e is not None:
            e.pending += 1

    def get(self, engine_id: str) -> EngineView | None:
        return self._engines.get(engine_id)
