"""Pure scheduling policies (no I/O): shared by the live scheduler and the simulator.

See docs/scheduling.md for the semantics (service units, queues, anti-starvation, balancing).
"""

from autellix.policy.balance import BalancerConfig, BalancerKind, Choice, choose_engine
from autellix.policy.batch import (
    BatchPlan,
    Candidate,
    PreemptionCost,
    PreemptionMode,
    plan_batch,
)
from autellix.policy.mlfq import MLFQConfig
from autellix.policy.priority import (
    PriorityKind,
    ProgramService,
    ServiceUnits,
    atlas_exact_base,
    atlas_update,
    plas_base,
)
from autellix.policy.rank import call_rank
from autellix.policy.registry import POLICIES, PolicyConfig, get_policy, list_policies
from autellix.policy.starvation import StarvationConfig, promotion_time, should_promote

__all__ = [
    "POLICIES",
    "BalancerConfig",
    "BalancerKind",
    "BatchPlan",
    "Candidate",
    "Choice",
    "MLFQConfig",
    "PolicyConfig",
    "PreemptionCost",
    "PreemptionMode",
    "PriorityKind",
    "ProgramService",
    "ServiceUnits",
    "StarvationConfig",
    "atlas_exact_base",
    "atlas_update",
    "call_rank",
    "choose_engine",
    "get_policy",
    "list_policies",
    "plan_batch",
    "plas_base",
    "promotion_time",
    "should_promote",
]
