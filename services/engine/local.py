"""The engine's local view of its calls: one `EngineCall` per dispatched call, and the per-level
waiting queues it admits from.

Why local level queues: vLLM admits FCFS (or by its own priority) and never preempts for a
better request at a full batch, so the engine service holds calls itself and hands the backend at
most `max_batch` at a time, always from the highest level (lowest number) first, FCFS within a
level. A preempted call goes back to the *front* of its level (it arrived before the others).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from autellix.protocol import Dispatch

_seq = itertools.count()


@dataclass(eq=False)
class EngineCall:
    """A call this engine holds: waiting, running (a segment in the backend), or done."""

    dispatch: Dispatch
    level: int
    seq: int = field(default_factory=lambda: next(_seq))
    arrived: float = field(default_factory=time.monotonic)
    prompt_ids: list[int] | None = None
    tokens: list[int] = field(default_factory=list)  # whole completion so far (incl. resumed)
    sent: int = 0  # tokens already streamed to the caller (= next delta offset)
    saved: int = 0  # tokens already persisted to Postgres (progress)
    cached_tokens: int | None = None
    run_s: float = 0.0
    segments: int = 0
    preemptions: int = 0
    state: str = "waiting"  # waiting | starting | running | done
    task: asyncio.Task[None] | None = None
    gen_task: asyncio.Task[str | None] | None = None
    stop_reason: str | None = None  # "preempt" | "cancel" | "lost" | "shutdown" while stopping
    stop_detail: str = ""
    requeue_level: int | None = None
    preempt_counted: bool = False
    control_seq: int = -1

    def __post_init__(self) -> None:
        self.tokens = list(self.dispatch.resume_token_ids)
        self.sent = len(self.tokens)
        self.saved = len(self.tokens)

    @property
    def call_id(self) -> str:
        return self.dispatch.call_id

    @property
    def attempts(self) -> int:
        """The `calls.attempts` value this engine owns the call under."""
        return self.dispatch.attempt + 1

    @property
    def max_tokens(self) -> int:
        return self.dispatch.request.sampling.max_tokens

    @property
    def remaining(self) -> int:
        return max(0, self.max_tokens - len(self.tokens))


class LevelQueues:
    """FIFO per level; `pop` takes from the lowest level number that has a call."""

    def __init__(self) -> None:
        self._q: dict[int, deque[EngineCall]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._q.values())

    def __bool__(self) -> bool:
        return any(self._q.values())

    def push(self, call: EngineCall, *, front: bool = False) -> None:
        q = self._q.setdefault(call.level, deque())
        if front:
            q.appendleft(call)
        else:
            q.append(call)

    def best_level(self) -> int | None:
        levels = [lvl for lvl, q in self._q.items() if q]
        return min(levels) if levels else None

    def pop(self) -> EngineCall | None:
        lvl = self.best_level()
        return None if lvl is None else self._q[lvl].popleft()

    def remove(self, call: EngineCall) -> bool:
        q = self._q.get(call.level)
        if q is not None and call in q:
            q.remove(call)
            return True
        return False

    def set_level(self, call: EngineCall, level: int) -> None:
        """Move a waiting call to `level`, keeping its arrival order there."""
        self.remove(call)
        call.level = level
        q = self._q.setdefault(level, deque())
        idx = next((i for i, c in enumerate(q) if c.seq > call.seq), len(q))
        q.insert(idx, call)

    def depths(self) -> list[int]:
        top = max((lvl for lvl, q in self._q.items() if q), default=-1)
        return [len(self._q.get(lvl, ())) for lvl in range(top + 1)]

    def all(self) -> list[EngineCall]:
        return [c for lvl in sorted(self._q) for c in self._q[lvl]]
