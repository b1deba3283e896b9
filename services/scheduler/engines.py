"""Which engines are alive and how loaded they are, from their heartbeats (kept in memory).

Why memory, not a Postgres query per decision: heartbeats arrive on NATS every second from every
engine anyway, and a dictionary lookup costs nothing on the dispatch path. Postgres still has the
`engines` rows: replicas seed this registry from them at start-up, and the reaper uses them (one
clock, the database's) to declare an engine lost.

`pending` counts dispatches this replica made since the engine's last heartbeat, so a burst of
calls between two heartbeats spreads over engines instead of piling onto the one that looked
emptiest a second ago.

Nothing here scans every engine per call: the balancer reads a `LoadIndex` per model that
heartbeats and dispatches keep up to date (see `EngineRegistry`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from autellix.policy.load_index import LoadIndex
from autellix.store.engines import EngineRow
from autellix.wire.protocol import EngineHeartbeat


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
    served_models: list[str] = field(default_factory=list)  # empty: `model` alone

    def names(self) -> list[str]:
        """The model names calls may ask this engine for."""
        return self.served_models or [self.model]

    @property
    def load(self) -> int:
        """Calls on (or on their way to) this engine."""
        return self.running + self.waiting + self.pending

    @property
    def utilization(self) -> float:
        return self.load / max(1, self.max_batch)


class EngineRegistry:
    """The live engines, indexed for the balancer: per model name (and one for calls naming
    none) a `LoadIndex` of the live, not draining engines' loads, updated by each heartbeat and
    dispatch. A decision reads the index of its model (`candidates`) and scans nothing; an
    engine whose heartbeat is older than `stale_after_s` leaves the indexes when the next
    question finds it at the top of the expiry heap."""

    def __init__(self, stale_after_s: float = 3.0) -> None:
        self.stale_after_s = stale_after_s
        self._engines: dict[str, EngineView] = {}
        self._index: dict[str | None, LoadIndex] = {None: LoadIndex()}
        self._indexed: dict[str, tuple[str, ...]] = {}  # engine -> the model names it is under
        self._expiry: list[tuple[float, str]] = []  # (seen, id), one per heartbeat

    @classmethod
    def of(cls, views: Iterable[EngineView]) -> EngineRegistry:
        """A registry holding `views` as live (callers that pass a list of engines)."""
        reg = cls(stale_after_s=math.inf)
        for v in views:
            reg._put(v)
        return reg

    def on_heartbeat(self, hb: EngineHeartbeat) -> None:
        self._put(
            EngineView(
                id=hb.engine_id,
                backend=hb.backend,
                model=hb.model,
                max_batch=hb.max_batch,
                running=hb.running,
                waiting=hb.waiting,
                kv_cache_usage=hb.kv_cache_usage,
                queue_depths=list(hb.queue_depths),
                draining=hb.draining,
                served_models=list(hb.served_models),
            )
        )

    def suspend(self, engine_id: str) -> None:
        """Take an engine out of every choice until its next heartbeat: its direct subject had
        no subscriber, so its process is gone (killed, crashed) and every call sent there would
        wait for its restart or the reaper. Without this it stayed a candidate for
        `stale_after_s` after its last heartbeat (3 s: a dead engine of two took half the new
        calls meanwhile). A heartbeat puts it back (a restarted engine heartbeats once it
        serves), so a wrong suspicion costs one heartbeat interval."""
        self._unindex(engine_id)

    def seed(self, rows: list[EngineRow]) -> None:
        now = time.monotonic()
        for r in rows:
            if r.id not in self._engines:
                self._put(
                    EngineView(
                        id=r.id,
                        backend=r.backend,
                        model=r.model,
                        max_batch=r.max_batch,
                        running=r.running,
                        waiting=r.waiting,
                        kv_cache_usage=r.kv_cache_usage,
                        seen=now - r.age_s,
                    )
                )

    def _put(self, view: EngineView) -> None:
        old = self._engines.get(view.id)
        if (
            old is not None
            and not view.draining
            and view.id in self._indexed
            and old.names() == view.names()
        ):  # the common heartbeat: same engine, new figures (no re-indexing by model)
            old.running, old.waiting, old.pending = view.running, view.waiting, 0
            old.kv_cache_usage, old.queue_depths = view.kv_cache_usage, view.queue_depths
            old.max_batch, old.backend, old.seen = view.max_batch, view.backend, view.seen
            for key in (None, *self._indexed[view.id]):
                self._index[key].set(view.id, float(old.load))
            if math.isfinite(self.stale_after_s):
                heapq.heappush(self._expiry, (old.seen, old.id))
            return
        self._engines[view.id] = view
        self._unindex(view.id)
        if view.draining:
            return
        names = (*dict.fromkeys(view.names()),)
        for key in (None, *names):
            self._index.setdefault(key, LoadIndex()).set(view.id, float(view.load))
        self._indexed[view.id] = names
        if math.isfinite(self.stale_after_s):
            heapq.heappush(self._expiry, (view.seen, view.id))

    def _unindex(self, engine_id: str) -> None:
        names = self._indexed.pop(engine_id, None)
        if names is None:
            return
        for key in (None, *names):
            idx = self._index.get(key)
            if idx is not None:
                idx.discard(engine_id)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.stale_after_s
        heap = self._expiry
        while heap and heap[0][0] < cutoff:
            seen, eid = heapq.heappop(heap)
            view = self._engines.get(eid)
            if view is not None and view.seen == seen:  # no heartbeat since: gone stale
                self._unindex(eid)

    def candidates(self, model: str | None) -> LoadIndex | None:
        """The live engines serving `model` (every live engine for None), by load."""
        self._expire()
        idx = self._index.get(model)
        return idx if idx else None

    def view(self, engine_id: str) -> EngineView:
        return self._engines[engine_id]

    def has_live(self) -> bool:
        self._expire()
        return bool(self._index[None])

    def live(self) -> list[EngineView]:
        """Every live engine (a scan: status and tests, not the dispatch path)."""
        self._expire()
        return [self._engines[e] for e in self._index[None].ids()]

    def note_dispatch(self, engine_id: str) -> None:
        e = self._engines.get(engine_id)
        if e is not None and engine_id in self._indexed:  # not one expired or suspended
            e.pending += 1
            for key in (None, *self._indexed.get(engine_id, ())):
                self._index[key].set(engine_id, float(e.load))

    def get(self, engine_id: str) -> EngineView | None:
        return self._engines.get(engine_id)

    def ids(self) -> list[str]:
        """Every engine ever heard of, live or not."""
        return list(self._engines)
