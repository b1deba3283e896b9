"""What one simulated run returns; the reporting layer computes every metric from this alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autellix.sim.trace import CallRecord


@dataclass(frozen=True, slots=True)
class ProgramOutcome:
    """One program's fate in a run (times in simulated seconds)."""

    program_id: str
    kind: str
    arrival_s: float
    finish_s: float
    output_tokens: int
    calls: int
    waiting_s: float  # summed over calls: time issued but not running
    executing_s: float  # summed over calls: time running in a batch
    preemptions: int
    cached_prompt_tokens: int
    prompt_tokens: int

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def latency_per_token_s(self) -> float:
        return self.latency_s / max(1, self.output_tokens)


@dataclass(slots=True)
class SimRun:
    """A finished simulation of one policy on one arrival sequence."""

    policy: str
    programs: list[ProgramOutcome]
    makespan_s: float
    preemptions: int
    engine_utilization: list[float]  # busy fraction per engine over the makespan
    cache_hit_rate: float  # cached prompt tokens / prompt tokens
    stats: dict[str, float] = field(default_factory=dict)
    simulated: bool = True
    # per-call records, only when simulate(..., record_calls=True) asked for them
    call_records: list[CallRecord] | None = None
