"""The engine's waiting calls, one sorted queue per MLFQ level, that admission takes from.

Why the engine queues calls itself: vLLM admits FCFS (or by its own priority) and never preempts
for a better request at a full batch, so the engine service holds calls itself and hands the
backend at most `max_batch` at a time, always from the highest level (lowest number) first, in
rank-key order inside a level (`call.py`).
"""

from __future__ import annotations

from bisect import bisect_left, insort

from autellix.services.engine.call import EngineCall


class LevelQueues:
    """Waiting calls per level, each level sorted by `(tiebreak, seq)`; `pop` takes the lowest
    key. Sorted lists (bisect) keep insert/remove cheap for the few thousand calls an
    overloaded engine may hold, and let admission look at only the head."""

    def __init__(self) -> None:
        self._q: dict[int, list[tuple[float, int, EngineCall]]] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    @staticmethod
    def _entry(call: EngineCall) -> tuple[float, int, EngineCall]:
        return (call.tiebreak, call.seq, call)

    def push(self, call: EngineCall, *, front: bool = False) -> None:
        """Insert by rank key (`front` is accepted for callers of the FIFO version: a preempted
        call's key already puts it ahead of later arrivals)."""
        del front
        insort(self._q.setdefault(call.level, []), self._entry(call), key=lambda e: e[:2])
        self._n += 1

    def best_level(self) -> int | None:
        levels = [lvl for lvl, q in self._q.items() if q]
        return min(levels) if levels else None

    def pop(self) -> EngineCall | None:
        lvl = self.best_level()
        if lvl is None:
            return None
        self._n -= 1
        return self._q[lvl].pop(0)[2]

    def remove(self, call: EngineCall) -> bool:
        q = self._q.get(call.level)
        if not q:
            return False
        i = bisect_left(q, (call.tiebreak, call.seq), key=lambda e: e[:2])
        if i < len(q) and q[i][2] is call:
            del q[i]
            self._n -= 1
            return True
        for j, e in enumerate(q):  # key changed under us (should not happen): linear fallback
            if e[2] is call:
                del q[j]
                self._n -= 1
                return True
        return False

    def set_level(self, call: EngineCall, level: int, tiebreak: float | None = None) -> None:
        """Move a waiting call to `level` (and order key), keeping its arrival order there."""
        self.remove(call)
        call.level = level
        if tiebreak is not None:
            call.tiebreak = tiebreak
        self.push(call)

    def head(self, n: int) -> list[EngineCall]:
        """The `n` best-ranked waiting calls, best first."""
        out: list[EngineCall] = []
        for lvl in sorted(lv for lv, q in self._q.items() if q):
            for e in self._q[lvl]:
                out.append(e[2])
                if len(out) >= n:
                    return out
        return out

    def depths(self) -> list[int]:
        top = max((lvl for lvl, q in self._q.items() if q), default=-1)
        return [len(self._q.get(lvl, ())) for lvl in range(top + 1)]

    def all(self) -> list[EngineCall]:
        return [e[2] for lvl in sorted(self._q) for e in self._q[lvl]]
