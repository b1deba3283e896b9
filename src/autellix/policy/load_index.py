"""`LoadIndex`: engines' loads kept ordered as they change, so a choice costs no scan.

Why: `choose_engine` asks three things of the loads (which engine is least loaded, the lowest
and the highest load, how many engines); over a plain list each is a scan of every engine, per
call. With a thousand engines that scan (and the sort by id before it) was the scheduler's
per-decision cost. Here each answer is read off a heap top, and an update (a heartbeat, a
dispatch) is a heap push: O(log n) per change, O(1) amortized per question.

The order is the one the list form uses: engine i is the i-th engine by id, ties go to the lowest
index, so `choose_engine` over a `LoadIndex` and over the list of the same loads sorted by id
pick the same engine (`tests/unit/test_load_index.py` checks it on random loads).

Heaps with lazy deletion: a changed load pushes a new entry and leaves the old one, which is
skipped when it reaches the top (its load is no longer the engine's); the heaps are rebuilt
from the live loads when stale entries outnumber them, so memory stays O(engines).
"""

from __future__ import annotations

import bisect
import heapq

__all__ = ["LoadIndex"]

_REBUILD_FACTOR = 4


class LoadIndex:
    """Engine id → load; positions are ranks by id (what `choose_engine`'s indices mean)."""

    __slots__ = ("_ids", "_load", "_max", "_min")

    def __init__(self) -> None:
        self._ids: list[str] = []  # sorted: position i is engine i
        self._load: dict[str, float] = {}
        self._min: list[tuple[float, str]] = []
        self._max: list[tuple[float, str]] = []  # (-load, id)

    # ------------------------------------------------------------------ changes

    def set(self, engine_id: str, load: float) -> None:
        """Add an engine or change its load."""
        old = self._load.get(engine_id)
        if old is None:
            bisect.insort(self._ids, engine_id)
        elif old == load:
            return
        self._load[engine_id] = load
        heapq.heappush(self._min, (load, engine_id))
        # max heap: highest load first; on ties any (only the value is read)
        heapq.heappush(self._max, (-load, engine_id))
        if len(self._min) > _REBUILD_FACTOR * len(self._load) + 64:
            self._rebuild()

    def discard(self, engine_id: str) -> None:
        """Remove an engine (stale, draining, gone); its heap entries are dropped lazily."""
        if self._load.pop(engine_id, None) is None:
            return
        i = bisect.bisect_left(self._ids, engine_id)
        del self._ids[i]
        if not self._load:
            self._min.clear()
            self._max.clear()

    def _rebuild(self) -> None:
        self._min = [(x, e) for e, x in self._load.items()]
        self._max = [(-x, e) for e, x in self._load.items()]
        heapq.heapify(self._min)
        heapq.heapify(self._max)

    # ------------------------------------------------------------------ `Loads`

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, engine_id: object) -> bool:
        return engine_id in self._load

    def _top(self, heap: list[tuple[float, str]], sign: float) -> tuple[float, str]:
        while heap:
            value, eid = heap[0]
            if self._load.get(eid) == sign * value:
                return value, eid
            heapq.heappop(heap)
        raise ValueError("no engines in the index")

    def least(self) -> int:
        """Position of the least loaded engine; the lowest id (position) on ties."""
        _, eid = self._top(self._min, 1.0)
        return bisect.bisect_left(self._ids, eid)

    def lowest(self) -> float:
        return self._top(self._min, 1.0)[0]

    def highest(self) -> float:
        return -self._top(self._max, -1.0)[0]

    # ------------------------------------------------------------------ ids and positions

    def position(self, engine_id: str | None) -> int | None:
        """Position of `engine_id`, None when it is not in the index."""
        if engine_id is None or engine_id not in self._load:
            return None
        return bisect.bisect_left(self._ids, engine_id)

    def id_at(self, position: int) -> str:
        return self._ids[position]

    def load_of(self, engine_id: str) -> float:
        return self._load[engine_id]

    def ids(self) -> list[str]:
        """Every engine id in position order (a copy)."""
        return list(self._ids)
