"""A call's rank under a policy: the sort key the engine's queues and `plan_batch` use.

`(level, tiebreak)`, lower first. level: the MLFQ queue of the call's priority value
(`base + used`, see `autellix.policy.priority`), 0 for FCFS and for calls aged by the
anti-starvation age rule, the program's remaining work for the SRPT oracle. tiebreak: the call's
issue time, its program's arrival (`within_level="program"`, and always for aged calls), or its
priority value (`within_level="service"`: exact least-attained order inside a queue).
The live scheduler calls `call_rank`; the simulator calls its two halves (`call_level` when a
running call crosses a queue boundary, `call_tiebreak` when a call is issued or aged).
"""

from __future__ import annotations

from autellix.policy.priority import PriorityKind
from autellix.policy.registry import PolicyConfig


def call_level(
    cfg: PolicyConfig, *, value: float, aged: bool = False, remaining: float = 0.0
) -> float:
    """The first element of the rank key: the queue of `value` (base + used), 0 for FCFS and for
    aged calls, `remaining` (the program's outstanding work) for the SRPT oracle.

    Split out of `call_rank` because the simulator re-evaluates a running call's level at every
    queue crossing without needing its tiebreak."""
    if cfg.priority is PriorityKind.SRPT:
        return remaining
    if cfg.priority is PriorityKind.FCFS or aged:
        return 0
    return cfg.mlfq.level_for(value)


def call_tiebreak(
    cfg: PolicyConfig, *, value: float, issue_s: float, program_arrival_s: float, aged: bool = False
) -> float:
    """The second element of the rank key: the order inside a queue (see module docstring)."""
    if aged or cfg.within_level == "program":
        return program_arrival_s
    if cfg.within_level == "service" and cfg.binned:
        return value
    return issue_s


def call_rank(
    cfg: PolicyConfig,
    *,
    value: float,
    issue_s: float,
    program_arrival_s: float,
    aged: bool = False,
    remaining: float = 0.0,
) -> tuple[float, float]:
    """Rank key of a call (see module docstring). `value` = base + used (promoted: used since
    promotion); `remaining` is only read by the SRPT oracle."""
    tiebreak = call_tiebreak(
        cfg, value=value, issue_s=issue_s, program_arrival_s=program_arrival_s, aged=aged
    )
    return (call_level(cfg, value=value, aged=aged, remaining=remaining), tiebreak)
