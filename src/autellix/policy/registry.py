"""Named scheduling policies: one configuration object used by the simulator and live services.

| name          | ranks calls by                 | preemptive | prefix cache | paper's name       |
|---------------|--------------------------------|------------|--------------|--------------------|
| fcfs-nocache  | arrival                        | no         | off          | vLLM               |
| fcfs          | arrival                        | no         | on           | vLLM-opt           |
| mlfq          | call's own service (MLFQ bins) | yes        | on           | MLFQ (FastServe)   |
| plas          | program's service (MLFQ bins)  | yes        | on           | Autellix PLAS      |
| plas-np       | program's service, exact order | no         | on           | (vLLM `priority`)  |
| atlas         | critical-path service (scalar) | yes        | on           | Autellix ATLAS     |
| atlas-exact   | critical path via parent ids   | yes        | on           | (beyond the paper) |
| gittins       | Gittins index of critical path | yes        | on           | (beyond the paper) |
| srpt          | program's remaining work       | yes        | on           | oracle (sim only)  |

`plas-np` models the cheap alternative to Autellix that issue 6 benchmarks as `vllm-priority`:
vLLM's own priority queue given each program's attained service when the call is submitted. It
orders waiting calls exactly as PLAS with `within_level="service"` does but never displaces a
running call, and has no anti-starvation; in the simulator it isolates what preemption adds.

Variants are made with `get_policy(name, **overrides)`; e.g. `get_policy("atlas", starvation=
StarvationConfig(beta=None))` for the no-anti-starvation ablation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autellix.policy.batch import PreemptionCost
from autellix.policy.gittins import GittinsConfig
from autellix.policy.mlfq import MLFQConfig
from autellix.policy.priority import PriorityKind, ServiceUnits
from autellix.policy.starvation import StarvationConfig

NO_STARVATION = StarvationConfig(beta=None, age_s=None)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Everything that defines a scheduling policy (no engine or workload parameters)."""

    name: str
    priority: PriorityKind
    preemptive: bool = False
    prefix_caching: bool = True
    mlfq: MLFQConfig = field(default_factory=MLFQConfig)
    starvation: StarvationConfig = NO_STARVATION
    units: ServiceUnits = field(default_factory=ServiceUnits)
    max_preemptions_per_step: int = 1
    # A call that has decoded fewer than this many tokens in its current run (since admission or
    # resumption) is not a victim of priority preemption (KV exhaustion ignores it): stops calls
    # ping-ponging in and out of the batch, each time paying their prefill again.
    min_run_tokens: int = 0
    preemption: PreemptionCost = field(default_factory=PreemptionCost)
    oracle: bool = False  # reads future program work: simulator only
    # Order inside a queue: FCFS by the call's issue time ("call") or by its program's arrival
    # ("program"), or least value first ("service": the priority value at issue, i.e. the queues
    # only coarsen *preemption*, while waiting calls are served in exact least-attained order)
    within_level: str = "call"
    # the index learner of the `gittins` policy (None for every other policy)
    gittins: GittinsConfig | None = None

    @property
    def binned(self) -> bool:
        """Whether ranks are MLFQ levels of a service value (vs. arrival order or SRPT)."""
        return self.priority not in (PriorityKind.FCFS, PriorityKind.SRPT)

    def __post_init__(self) -> None:
        if self.within_level not in WITHIN_LEVEL:
            raise ValueError(
                f"within_level must be one of {', '.join(WITHIN_LEVEL)}, not {self.within_level!r}"
            )

    def replace(self, **changes: Any) -> PolicyConfig:
        return dataclasses.replace(self, **changes)


WITHIN_LEVEL = ("call", "program", "service")
_PAPER_STARVATION = StarvationConfig()
# Every preemptive policy (baselines included) protects a run's first 16 decoded tokens from
# priority preemption (docs/scheduling.md, "Preemption thrash"); the paper's worked example
# uses 0.
MIN_RUN_TOKENS = 16
# Program-aware policies order calls inside a queue by program arrival (docs/scheduling.md: keeps
# a program's calls together, which keeps its prefix cached; the paper's call order is ablated).
_PROGRAM_AWARE: dict[str, Any] = {
    "preemptive": True,
    "min_run_tokens": MIN_RUN_TOKENS,
    "starvation": _PAPER_STARVATION,
    "within_level": "program",
}

POLICIES: dict[str, PolicyConfig] = {
    p.name: p
    for p in (
        PolicyConfig("fcfs-nocache", PriorityKind.FCFS, prefix_caching=False),
        PolicyConfig("fcfs", PriorityKind.FCFS),
        PolicyConfig("mlfq", PriorityKind.CALL, preemptive=True, min_run_tokens=MIN_RUN_TOKENS),
        PolicyConfig("plas", PriorityKind.PLAS, **_PROGRAM_AWARE),
        PolicyConfig("plas-np", PriorityKind.PLAS, within_level="service"),
        PolicyConfig("atlas", PriorityKind.ATLAS, **_PROGRAM_AWARE),
        PolicyConfig("atlas-exact", PriorityKind.ATLAS_EXACT, **_PROGRAM_AWARE),
        PolicyConfig(
            "gittins",
            PriorityKind.GITTINS,
            **{**_PROGRAM_AWARE, "within_level": "service"},
            gittins=GittinsConfig(),
        ),
        PolicyConfig(
            "srpt",
            PriorityKind.SRPT,
            preemptive=True,
            oracle=True,
            min_run_tokens=MIN_RUN_TOKENS,
        ),
    )
}


def list_policies() -> list[str]:
    return list(POLICIES)


def get_policy(name: str, **overrides: Any) -> PolicyConfig:
    """The named policy, with fields replaced by `overrides` (unknown fields raise TypeError)."""
    try:
        base = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    return base.replace(**overrides) if overrides else base
