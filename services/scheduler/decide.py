"""The policy seam: one function decides a call's MLFQ level and engine.

Everything the scheduler knows about the call and its program (the `CallRow`: program service,
engine affinity, parents, prompt) and about the engines (live `EngineView`s with load) goes in;
a `Decision` (or None: no engine can take it now) comes out. The dispatcher does the rest
(conditional transition, event row, publish). The program-aware policies (PLAS/ATLAS levels,
anti-starvation, locality balancing from `autellix.policy`) replace `decide` here and nothing
else in the scheduler changes.

Today (issue 3): FCFS. Every call enters level 0 (so the engines serve in arrival order) and goes
to the least-utilized live engine ((running + waiting + in-flight) / max_batch), ties broken at
random so replicas do not herd onto the same engine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from autellix.services.scheduler.engines import EngineView

from autellix.store.queries import CallRow


@dataclass(frozen=True, slots=True)
class Decision:
    engine_id: str
    level: int
    priority: float  # program service at dispatch (lower runs first)
    reason: str


def decide(call: CallRow, engines: Sequence[EngineView]) -> Decision | None:
    if not engines:
        return None
    engine = min(engines, key=lambda e: (e.utilization, random.random()))
    return Decision(
        engine_id=engine.id,
        level=0,
        priority=call.program_service,
        reason=f"fcfs; least-utilized engine ({engine.load}/{engine.max_batch})",
    )
