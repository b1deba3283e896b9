"""The simulator's engine and the live engine decide the same batches from the same events.

The live side is the engine service's admission (`services/engine/admission.py`: `_admit`, which
builds the candidates and calls `autellix.policy.plan_batch`) over its real `LevelQueues` and
`EngineCall`s, with levels set by the live scheduler's `LivePolicy.level_after`. What a decision
then *does* (a backend generation, an abort) is replaced by its effect on the engine's state, one
engine step at a time, so the two engines see the same steps:

* a step gives every running call one token (the prefill step included, as in the simulator);
* a call that has all its tokens finishes; a running call whose service crossed a queue boundary
  is demoted; calls arriving at the step join the queues;
* then one admission: a preemption releases its victim's slot at once and counts against the
  engine's one-in-flight cap until the next step (the simulator's one per iteration).

The simulator side is the real `Simulator` (unit-time profile, one iteration per event), whose
call records give every run's start and end. Both must produce the same runs: the same calls
admitted at the same steps and the same victims preempted at the same steps.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from autellix.backends.sim import SimConfig, SimulatedBackend
from autellix.policy import MLFQConfig, get_policy
from autellix.services.engine.call import EngineCall
from autellix.services.engine.runner import EngineRunner
from autellix.services.scheduler.decide import LivePolicy
from autellix.sim import simulate
from autellix.sim.profile import EngineProfile
from autellix.wire.protocol import CallRequest, Dispatch, SamplingParams, Subjects
from autellix.workloads.types import CallSpec, ProgramSpec

BATCH = 3
MIN_RUN = 2
QUANTA = (5, 4, 2.0)  # levels, first quantum, growth: boundaries 4, 8, 16, 32 service units

Run = tuple[str, int, int, int]  # (call id, start step, end step, tokens decoded in the run)


def _workload(seed: int) -> list[ProgramSpec]:
    """Single-call programs arriving at whole steps (several may share a step)."""
    rng = random.Random(seed)
    t, programs = 0, []
    for i in range(rng.randint(6, 14)):
        t += rng.choice((0, 0, 1, 2, 5))
        call = CallSpec(0, 0, (), 8, rng.randint(1, 40))
        programs.append(ProgramSpec(f"p{i:02d}", "parity", float(t), (call,)))
    return programs


def _simulated_runs(programs: list[ProgramSpec]) -> list[Run]:
    levels, q, g = QUANTA
    policy = get_policy("mlfq", mlfq=MLFQConfig.geometric(levels, q, g), min_run_tokens=MIN_RUN)
    run = simulate(
        programs,
        policy=policy,
        profile=EngineProfile.unit(max_num_seqs=BATCH),
        max_jump_steps=1,
        record_calls=True,
    )
    assert run.call_records is not None
    return sorted(
        (spec.program_id, round(t0), round(t1), done)
        for spec, rec in zip(programs, run.call_records, strict=True)
        for (_, t0, t1, done, _) in rec.runs
    )


class _SteppedEngine(EngineRunner):
    """The live engine's admission, with each decision's effect applied at once (see module
    docstring); everything that decides is the engine service's own code."""

    def __init__(self) -> None:
        super().__init__(
            backend=SimulatedBackend(SimConfig(max_batch=BATCH)),
            pool=None,
            nc=None,  # type: ignore[arg-type]
            js=None,  # type: ignore[arg-type]
            subjects=Subjects("parity"),
            engine_id="e-parity",
            log=structlog.get_logger(),
        )
        self.hold = False  # arrivals of one step join the queues before the step's admission
        self.step = 0
        self.started: dict[EngineCall, int] = {}
        self.runs: list[Run] = []

    def _admit(self) -> None:
        if not self.hold:
            super()._admit()

    def _start(self, call: EngineCall) -> None:
        call.state = "running"
        call.run_start_tokens = len(call.tokens)
        self.running.add(call)
        self.started[call] = self.step

    def _end_run(self, call: EngineCall) -> None:
        self.running.discard(call)
        t0 = self.started.pop(call)
        self.runs.append((call.dispatch.program_id, t0, self.step, call.run_tokens))

    def preempt(
        self, call: EngineCall, reason: str, requeue_level: int | None = None, by: str | None = None
    ) -> bool:
        del reason, requeue_level, by
        self._end_run(call)
        call.state = "waiting"
        call.preemptions += 1
        self._preempting += 1  # in flight until the step ends
        self.queues.push(call)
        return True


def _dispatch(spec: ProgramSpec, policy: LivePolicy) -> Dispatch:
    level, tiebreak = policy.rank(0.0, issue_s=spec.arrival_s, arrival_s=spec.arrival_s, aged=False)
    return Dispatch(
        call_id=spec.program_id,
        program_id=spec.program_id,
        thread_id="main",
        reply_to=f"_INBOX.{spec.program_id}",
        level=int(level),
        priority=0.0,
        request=CallRequest(
            program_id=spec.program_id,
            prompt_token_ids=[1] * spec.calls[0].prompt_tokens,
            sampling=SamplingParams(max_tokens=spec.calls[0].output_tokens),
        ),
        accepted_at=datetime.now(UTC),
        tiebreak=float(tiebreak),
        min_run_tokens=policy.min_run_tokens,
    )


def _live_runs(programs: list[ProgramSpec]) -> list[Run]:
    levels, q, g = QUANTA
    policy = LivePolicy.build("mlfq", levels=levels, quantum=q, growth=g, min_run_tokens=MIN_RUN)
    engine = _SteppedEngine()
    pending = sorted(programs, key=lambda p: p.arrival_s)
    while pending or engine.queues or engine.running:
        engine._preempting = 0  # last step's preemptions have released their slots
        for call in sorted(engine.running, key=lambda c: c.key):
            call.tokens.append(0)
            if call.remaining == 0:
                engine._end_run(call)
                call.state = "done"
            else:
                call.level = policy.level_after(rank_base=0.0, service=call.service, aged=False)
        engine.hold = True
        while pending and pending[0].arrival_s <= engine.step:
            assert engine.offer(_dispatch(pending.pop(0), policy))
        engine.hold = False
        engine._admit()
        engine.step += 1
    return sorted(engine.runs)


@pytest.mark.parametrize("seed", range(40))
def test_simulator_and_live_engine_admit_and_preempt_the_same_calls(seed: int) -> None:
    programs = _workload(seed)
    simulated = _simulated_runs(programs)
    live = _live_runs(programs)
    assert live == simulated


def test_the_parity_workloads_exercise_preemption_and_protection() -> None:
    """The comparison above is only worth something if the batches fill, calls are preempted
    (some more than once) and young runs are protected; check that the seeds get there."""
    runs: list[list[Any]] = [_simulated_runs(_workload(s)) for s in range(40)]
    resumed = [r for rs in runs for r in rs if r[1] > 0 and r[3] < 40]
    per_call: dict[tuple[int, str], int] = {}
    for i, rs in enumerate(runs):
        for r in rs:
            per_call[(i, r[0])] = per_call.get((i, r[0]), 0) + 1
    assert sum(1 for n in per_call.values() if n >= 2) >= 20  # preempted calls
    assert any(n >= 3 for n in per_call.values())  # preempted more than once
    assert resumed
