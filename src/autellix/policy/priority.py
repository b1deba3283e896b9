"""Program-level service accounting: what PLAS and ATLAS rank calls by.

Units of service. The paper counts execution time on the model executor. We count *service units*:
one unit per decoded token, plus `prefill_weight` units per prompt token actually computed (not
served from the prefix cache). Decode steps are deterministic (the same on every engine and under
any load), whereas time depends on batch composition, which would let a busy engine's calls look
"more served" than an idle one's. `prefill_weight` defaults to 0 (decode steps only, as the
kungfu-team fork does); it is an ablation knob.

A call's *priority value* is `base + used`: `base` is fixed when the call is issued (from the
program table), `used` is the call's own attained service so far. Lower value = higher priority.
- call-level MLFQ (FastServe-like): base = 0, so every new call enters the top queue.
- PLAS: base = the program's attained service when the call is issued: completed calls plus the
  progress of its calls still running (`plas_base`).
- ATLAS (paper's scalar rule): base = `program.service`, the longest critical path seen; on a
  call's completion `program.service = max(program.service, base + used)` (`atlas_update`).
  On a single-threaded program this equals PLAS.
- ATLAS exact (beyond the paper, needs parent ids): base = max over parents k of
  (base_k + used_k), 0 for a root (`atlas_exact_base`).
- SRPT (oracle, simulator only): the program's remaining work; not a service value.
- Gittins: the same base as ATLAS; the value is then read through the program class's learned
  index curve (`autellix.policy.gittins`), so the rank is an effective remaining size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class PriorityKind(StrEnum):
    """Which quantity ranks calls (lower first)."""

    FCFS = "fcfs"  # all calls equal: arrival order only
    CALL = "call"  # call-level LAS/MLFQ: the call's own attained service
    PLAS = "plas"  # program's attained service (sum over its calls)
    ATLAS = "atlas"  # program's critical-path service, paper's scalar rule
    ATLAS_EXACT = "atlas-exact"  # critical path through explicit parent ids
    SRPT = "srpt"  # oracle: the program's remaining output tokens
    GITTINS = "gittins"  # Gittins index of the critical-path service (`policy.gittins`)


@dataclass(frozen=True, slots=True)
class ServiceUnits:
    """Converts work into service units (see module docstring)."""

    prefill_weight: float = 0.0

    def of(self, decode_tokens: float, prefill_tokens: float = 0.0) -> float:
        return decode_tokens + self.prefill_weight * prefill_tokens


def plas_base(completed_service: float, running_progress: Iterable[float] = ()) -> float:
    """PLAS: a new call starts at its program's attained service (completed + in progress)."""
    return completed_service + sum(running_progress)


def atlas_update(program_service: float, call_base: float, call_used: float) -> float:
    """Paper's ATLAS program-table update when a call finishes (monotone: never decreases)."""
    return max(program_service, call_base + call_used)


def atlas_exact_base(parents: Iterable[tuple[float, float]]) -> float:
    """Exact ATLAS: p(c) = max over parents k of p(k) + t(k); 0 for a root call.

    `parents` yields (p(k), t(k)) pairs: each parent's base and its attained service.
    """
    return max((p + t for p, t in parents), default=0.0)


@dataclass(frozen=True, slots=True)
class ProgramService:
    """The part of the program table PLAS/ATLAS need, as an immutable value.

    completed: sum of the service of the program's finished calls (PLAS).
    critical: the longest critical path seen (ATLAS scalar, `program.service` in the paper).
    """

    completed: float = 0.0
    critical: float = 0.0

    def finish(self, call_base: float, call_used: float) -> ProgramService:
        """Fold a finished (or aborted: its service still counts) call into the program."""
        return ProgramService(
            completed=self.completed + call_used,
            critical=atlas_update(self.critical, call_base, call_used),
        )

    def base_for(self, kind: PriorityKind, running_progress: Iterable[float] = ()) -> float:
        """The base of a new call under a service-ranked policy (0 for FCFS/CALL/SRPT)."""
        if kind is PriorityKind.PLAS:
            return plas_base(self.completed, running_progress)
        if kind in (PriorityKind.ATLAS, PriorityKind.GITTINS):
            return self.critical
        return 0.0
