"""Order inside an MLFQ queue, `within_level` "call", "program" or "service": policy, simulator."""

from __future__ import annotations

import pytest

from autellix.policy import MLFQConfig
from autellix.policy.rank import call_rank
from autellix.policy.registry import get_policy
from autellix.sim import EngineProfile, simulate
from autellix.workloads.types import CallSpec, ProgramSpec


def test_rank_tiebreak_per_mode() -> None:
    kw = {"value": 40.0, "issue_s": 7.0, "program_arrival_s": 2.0}
    plas = get_policy("plas")
    assert call_rank(plas.replace(within_level="call"), **kw) == (0, 7.0)
    assert call_rank(plas.replace(within_level="program"), **kw) == (0, 2.0)
    assert call_rank(plas.replace(within_level="service"), **kw) == (0, 40.0)
    # aged calls always go by program arrival; FCFS has no service value to order by
    assert call_rank(plas.replace(within_level="service"), aged=True, **kw) == (0, 2.0)
    assert call_rank(get_policy("fcfs").replace(within_level="service"), **kw) == (0, 7.0)
    with pytest.raises(ValueError, match="within_level"):
        plas.replace(within_level="random")


def programs() -> list[ProgramSpec]:
    """One slot. X (t=0) runs 10 steps and holds the slot. A (t=0) has a first call of 3 steps,
    then a second; B arrives at t=1 with one call of 2 steps. When X ends, A's second call
    (value 3, older program) and B's call (value 0, newer program) both wait in queue 0."""

    def prog(name: str, arrival: float, steps: list[int]) -> ProgramSpec:
        calls = tuple(
            CallSpec(i, 0, (i - 1,) if i else (), prompt_tokens=0, output_tokens=n)
            for i, n in enumerate(steps)
        )
        return ProgramSpec(name, "t", arrival, calls)

    return [prog("X", 0.0, [10]), prog("A", 0.0, [3, 3]), prog("B", 1.0, [2])]


@pytest.mark.parametrize(("mode", "first"), [("program", "A"), ("service", "B"), ("call", "B")])
def test_simulator_orders_a_queue_by_mode(mode: str, first: str) -> None:
    run = simulate(
        programs(),
        policy="plas",
        profile=EngineProfile.unit(1),
        mlfq=MLFQConfig((64.0, 128.0)),  # everything stays in queue 0
        within_level=mode,
        beta=None,
        preemptive=False,
    )
    finish = {p.program_id: p.finish_s for p in run.programs}
    # X, then A's first call (value 0 like B, and waiting longer); then A's second call (issued at
    # 13, value 3, older program) against B's (issued at 1, value 0): the mode decides
    assert finish["X"] == 10
    other = "B" if first == "A" else "A"
    assert finish[first] < finish[other]
