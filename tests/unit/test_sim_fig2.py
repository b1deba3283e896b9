"""The paper's worked example (Fig. 2), SIMULATED with a unit-time engine.

Batch of 2; programs A, B, C, D arrive at t=0 in that order; decode steps per call
A [4,3,1,1], B [3,3,4], C [1,2], D [4]; each call is issued when its program's previous call
ends; one decode step takes one time unit and prefill is free. Total queued time: FCFS 18 and
PLAS 12 (design.md §2). PLAS semantics that give 12: a call's priority is its program's
completed service plus its own progress, re-evaluated every step (continuous, or binned at
1, 2, 4, 8), preempting only for a strictly lower value (ties keep the running call, then
earlier call arrival), with no cap on preemptions per step.
"""

from __future__ import annotations

import pytest

from autellix.policy import MLFQConfig
from autellix.sim import EngineProfile, simulate
from autellix.workloads.types import CallSpec, ProgramSpec

STEPS = {"A": [4, 3, 1, 1], "B": [3, 3, 4], "C": [1, 2], "D": [4]}


def fig2_programs() -> list[ProgramSpec]:
    return [
        ProgramSpec(
            name,
            "fig2",
            0.0,
            tuple(
                CallSpec(i, 0, (i - 1,) if i else (), prompt_tokens=0, output_tokens=n)
                for i, n in enumerate(steps)
            ),
        )
        for name, steps in STEPS.items()
    ]


def total_wait(policy: str, **options: object) -> float:
    run = simulate(fig2_programs(), policy=policy, profile=EngineProfile.unit(2), **options)
    assert run.simulated
    return sum(p.waiting_s for p in run.programs)


def test_fcfs_waits_18() -> None:
    assert total_wait("fcfs") == 18
    assert total_wait("fcfs-nocache") == 18


@pytest.mark.parametrize("mlfq", [MLFQConfig.continuous(), MLFQConfig((1, 2, 4, 8))])
@pytest.mark.parametrize("policy", ["plas", "atlas"])
def test_plas_waits_12(policy: str, mlfq: MLFQConfig) -> None:
    assert (
        total_wait(
            policy,
            mlfq=mlfq,
            within_level="call",
            beta=None,
            max_preemptions_per_step=1000,
            min_run_tokens=0,
        )
        == 12
    )


def test_fig2_finish_times_and_work() -> None:
    run = simulate(
        fig2_programs(),
        policy="plas",
        profile=EngineProfile.unit(2),
        mlfq=MLFQConfig.continuous(),
        within_level="call",
        beta=None,
        max_preemptions_per_step=1000,
        min_run_tokens=0,
    )
    finish = {p.program_id: p.finish_s for p in run.programs}
    # 26 unit steps on 2 slots; B's chain of 10 steps ends last, at 14
    assert max(finish.values()) == 14
    # short programs finish first under PLAS, unlike FCFS where D (4 steps) ends at 8
    assert finish["C"] < finish["D"] < finish["A"] < finish["B"]
    assert sum(p.executing_s for p in run.programs) == sum(sum(s) for s in STEPS.values())
    assert run.stats["decoded_tokens"] == sum(sum(s) for s in STEPS.values())


def test_srpt_oracle_beats_plas() -> None:
    assert total_wait("srpt", max_preemptions_per_step=1000, min_run_tokens=0) < 12


def test_min_run_protects_young_runs() -> None:
    """A run younger than `min_run_tokens` is no preemption victim: with calls of at most 4
    steps and a protection of 16, PLAS cannot preempt at all and behaves like FCFS here."""
    kw = {
        "mlfq": MLFQConfig.continuous(),
        "within_level": "call",
        "beta": None,
        "max_preemptions_per_step": 1000,
    }
    run = simulate(
        fig2_programs(), policy="plas", profile=EngineProfile.unit(2), min_run_tokens=16, **kw
    )
    assert run.stats["priority_preemptions"] == 0
    free = simulate(
        fig2_programs(), policy="plas", profile=EngineProfile.unit(2), min_run_tokens=0, **kw
    )
    assert free.stats["priority_preemptions"] > 0
