"""A call's rank under a policy: the sort key the engine's queues and `plan_batch` use.

`(level, tiebreak)`, lower first. level: the MLFQ queue of the call's priority value
(`base + used`, see `autellix.policy.priority`), 0 for FCFS and for calls aged by the
anti-starvation age rule, the program's remaining work for the SRPT oracle. tiebreak: the call's
issue time, its program's arrival (`within_level="program"`, and always for aged calls), or its
priority value (`within_level="service"`: exact least-attained order inside a queue).
The simulator computes the same key incrementally; the live engine service calls this.
"""

from __future__ import annotations

from autellix.policy.priority import PriorityKind
from autellix.policy.registry import PolicyConfig


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
    if aged or cfg.within_level == "program":
        tiebreak = program_arrival_s
    elif cfg.within_level == "service" and cfg.binned:
        tiebreak = value
    else:
        tiebreak = issue_s
    if cfg.priority is PriorityKind.SRPT:
        return (remaining, tiebreak)
    if cfg.priority is PriorityKind.FCFS or aged:
        return (0, tiebreak)
    return (cfg.mlfq.level_for(value), tiebreak)
