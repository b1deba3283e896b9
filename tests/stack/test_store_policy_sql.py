"""The program table's totals computed in SQL equal the policy core's functions, for any history.

Postgres computes the totals PLAS, ATLAS and anti-starvation rank by, so that concurrent
replicas cannot lose an update (`store.progress.fold_progress`, `store.finish`): completed and
attained service, the ATLAS critical path, the parents' critical path exact ATLAS reads, W_p and
T_p, and the anti-starvation pass's candidate filter. The same numbers are defined in Python in
`autellix.policy` (`ProgramService`, `plas_base`, `atlas_update`, `atlas_exact_base`,
`is_aged`) and used by the simulator. Here hypothesis draws random programs (threads, calls,
progress reports arriving out of order, promotions, finishes, failures, cancellations, calls
left running) and runs them through the real statements on a real, migrated Postgres; every
total read back must equal the policy function applied to the same history, and the base the
live scheduler computes from the loaded row (`LivePolicy.base_for`) must equal it too.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from builders import accept
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autellix.policy import ProgramService, StarvationConfig, atlas_exact_base, plas_base
from autellix.policy.starvation import is_aged
from autellix.services.scheduler.decide import LivePolicy
from autellix.store.db import create_pool
from autellix.store.dispatch import DispatchItem, load_call, mark_dispatched_many
from autellix.store.finish import cancel_call, fail_call, finish_call
from autellix.store.levels import LevelChange, change_levels, starvation_candidates
from autellix.store.progress import Progress, fold_progress
from autellix.store.running import mark_preempted, mark_running
from autellix.store.states import ACTIVE

ENGINE = "sql-policy-engine"
AGE_S = 20.0  # the age rule's threshold when drawn; program ages are drawn well away from it
# waiting calls (what the anti-starvation filter looks at) drawn as often as finished ones
OUTCOMES = (
    "finish",
    "finish",
    "fail",
    "cancel",
    "dispatched",
    "dispatched",
    "preempted",
    "running",
)


@dataclass(frozen=True)
class CallPlan:
    """One call's drawn history (what the engine and the schedulers will do to it)."""

    thread: int
    base: float  # the priority it is dispatched with (PLAS/ATLAS base)
    level: int
    aged: bool
    reports: tuple[tuple[float, float], ...]  # cumulative (service, run_s), non-decreasing
    promote_after_s: float | None  # promoted (fresh quantum); reset this long after accept
    accepted_ago_s: float
    outcome: str
    final_service: float
    final_run_s: float


@dataclass
class Model:
    """What the test knows each call went through, to apply the policy functions to."""

    plan: CallPlan
    call_id: str
    used: float = 0.0  # the call's attained service as the policy counts it
    run_s: float = 0.0
    reset_run_s: float = 0.0
    promoted: bool = False
    rows: dict[str, Any] = field(default_factory=dict)


@st.composite
def call_plans(draw: st.DrawFn) -> CallPlan:
    steps = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30)), max_size=4))
    service, run_s, reports = 0.0, 0.0, []
    for d_service, d_run in steps:  # an engine's reports are cumulative
        service, run_s = service + d_service / 2, run_s + d_run / 10
        reports.append((service, run_s))
    accepted_ago = draw(st.integers(1, 120)) + 0.25
    return CallPlan(
        thread=draw(st.integers(0, 2)),
        base=draw(st.integers(-20, 200)) / 4,
        level=draw(st.integers(0, 2)),
        aged=draw(st.booleans()),
        reports=tuple(reports),
        promote_after_s=draw(st.one_of(st.none(), st.floats(0.0, accepted_ago))),
        accepted_ago_s=accepted_ago,
        outcome=draw(st.sampled_from(OUTCOMES)),
        final_service=draw(st.integers(0, 200)) / 2,
        final_run_s=draw(st.integers(0, 100)) / 10,
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def _run_history(
    pool: asyncpg.Pool, program: str, plans: list[CallPlan], rng: random.Random
) -> list[Model]:
    models: list[Model] = []
    for plan in plans:
        res = await accept(
            pool, program_id=program, thread_id=f"t{plan.thread}", reply_to="_INBOX.sqlpolicy"
        )
        models.append(Model(plan, res.call_id))
    done = await mark_dispatched_many(
        pool,
        [
            DispatchItem(
                call_id=m.call_id,
                attempt=0,
                engine_id=ENGINE,
                level=m.plan.level,
                priority=m.plan.base,
                reason="property",
                aged=m.plan.aged,
            )
            for m in models
        ],
        actor="test",
    )
    assert set(done) == {m.call_id for m in models}
    for m in models:  # the state each call runs in while its progress arrives
        waiting = m.plan.outcome == "dispatched"
        if m.plan.outcome in ("running", "preempted") or (not waiting and rng.random() < 0.5):
            assert await mark_running(
                pool, call_id=m.call_id, attempts=1, engine_id=ENGINE, prompt_tokens=1
            )
            if m.plan.outcome == "preempted":
                assert await mark_preempted(
                    pool,
                    call_id=m.call_id,
                    attempts=1,
                    engine_id=ENGINE,
                    output_token_ids=[],
                    level=m.plan.level,
                    reason="property",
                )

    # progress reports, shuffled across calls and batches (late, stale and duplicate ones too)
    reports = [(m, s, r) for m in models for s, r in m.plan.reports]
    reports += [rng.choice(reports) for _ in range(len(reports) // 2)] if reports else []
    rng.shuffle(reports)
    while reports:
        k = rng.randint(1, 5)
        batch, reports = reports[:k], reports[k:]
        async with pool.acquire() as conn:
            await fold_progress(
                conn, [Progress(m.call_id, ENGINE, s, r, program) for m, s, r in batch]
            )
        for m, s, r in batch:
            m.used, m.run_s = max(m.used, s), max(m.run_s, r)

    promote = [m for m in models if m.plan.promote_after_s is not None and not m.plan.aged]
    promote = [m for m in promote if m.plan.level > 0]
    changed = await change_levels(
        pool,
        [
            LevelChange(m.call_id, m.plan.level, 0, "property", value=0.0, restart=True)
            for m in promote
        ],
        kind="promote",
        actor="test",
    )
    assert {c.id for c in changed} == {m.call_id for m in promote}
    for m in promote:
        m.promoted, m.reset_run_s = True, m.run_s
    for m in models:  # time travel: when it was accepted and (if promoted) last reset
        reset_ago = m.plan.accepted_ago_s - m.plan.promote_after_s if m.promoted else None
        await pool.execute(
            """UPDATE calls SET accepted_at = now() - make_interval(secs => $2),
                   reset_at = CASE WHEN $3::float8 IS NULL THEN reset_at
                                   ELSE now() - make_interval(secs => $3) END
               WHERE id = $1""",
            m.call_id,
            m.plan.accepted_ago_s,
            reset_ago,
        )

    for m in models:
        if m.plan.outcome == "finish":
            row = await finish_call(
                pool,
                call_id=m.call_id,
                attempts=1,
                engine_id=ENGINE,
                prompt_tokens=1,
                completion_tokens=1,
                cached_tokens=0,
                service=m.plan.final_service,
                run_s=m.plan.final_run_s,
                finish_reason="stop",
                output_token_ids=None,
            )
            assert row is not None
            m.used, m.run_s = m.plan.final_service, max(m.run_s, m.plan.final_run_s)
        elif m.plan.outcome == "fail":
            assert await fail_call(
                pool,
                call_id=m.call_id,
                code="engine_error",
                message="property",
                actor=ENGINE,
                from_statuses=ACTIVE,
                attempts=1,
                engine_id=ENGINE,
            )
        elif m.plan.outcome == "cancel":
            got = await cancel_call(pool, call_id=m.call_id, message="property", actor="test")
            assert got.cancelled
    for m in models:
        m.rows = dict(await pool.fetchrow("SELECT * FROM calls WHERE id = $1", m.call_id))
    return models


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def _expected_program(models: list[Model]) -> tuple[ProgramService, list[float]]:
    """The policy's program table for this history: `ProgramService.finish` per finished call;
    a failed or cancelled call's service counts as completed (PLAS) but does not extend the
    critical path (the store's rule: only an answered call's path is known to be complete)."""
    program = ProgramService()
    for m in models:
        if m.plan.outcome == "finish":
            program = program.finish(m.plan.base, m.used)
        elif m.plan.outcome in ("fail", "cancel"):
            program = ProgramService(program.completed + m.used, program.critical)
    running = [m.used for m in models if m.plan.outcome not in ("finish", "fail", "cancel")]
    return program, running


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plans=st.lists(call_plans(), min_size=1, max_size=6),
    program_age_s=st.sampled_from([2.5, 12.5, 25.5, 60.5, 300.5]),
    age_rule=st.booleans(),
    parents=st.lists(st.integers(0, 5), max_size=3, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
async def test_sql_program_totals_equal_the_policy_functions(
    pool: asyncpg.Pool,
    plans: list[CallPlan],
    program_age_s: float,
    age_rule: bool,
    parents: list[int],
    seed: int,
) -> None:
    program = f"p-prop-{uuid.uuid4().hex[:12]}"
    models = await _run_history(pool, program, plans, random.Random(seed))
    await pool.execute(
        "UPDATE programs SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
        program,
        program_age_s,
    )
    p = await pool.fetchrow("SELECT * FROM programs WHERE id = $1", program)
    expected, running = _expected_program(models)
    approx = pytest.approx

    # PLAS / ATLAS totals (store.finish, store.progress) against ProgramService and plas_base
    assert p["total_service"] == approx(expected.completed)
    assert p["service"] == approx(expected.critical)
    assert p["attained"] == approx(plas_base(expected.completed, running))
    for m in models:
        assert m.rows["service"] == approx(m.used), m.plan
    for t in await pool.fetch("SELECT * FROM threads WHERE program_id = $1", program):
        mine = [m.used for m in models if f"t{m.plan.thread}" == t["thread_id"]]
        assert t["service"] == approx(sum(mine)), t["thread_id"]

    # anti-starvation W_p, T_p: each finished call's W_c, T_c since its last reset
    w_p = t_p = waited = run_total = 0.0
    for m in models:
        if m.plan.outcome != "finish":
            continue
        r = m.rows
        assert r["run_s"] == approx(m.run_s) and r["reset_run_s"] == approx(m.reset_run_s)
        t_c = m.run_s - m.reset_run_s
        w_c = _seconds(r["finished_at"], r["reset_at"] or r["accepted_at"]) - t_c
        w_p, t_p = w_p + max(w_c, 0.0), t_p + max(t_c, 0.0)
        waited += max(_seconds(r["finished_at"], r["accepted_at"]) - m.run_s, 0.0)
        run_total += m.run_s
    assert p["starve_wait_s"] == approx(w_p)
    assert p["starve_run_s"] == approx(t_p)
    assert p["waiting_s"] == approx(waited)
    assert p["run_s"] == approx(run_total)

    # the base the live scheduler gives the program's next call, from the row it loads
    parent_models = [models[i] for i in parents if i < len(models)]
    nxt = await accept(
        pool,
        program_id=program,
        thread_id="t-next",
        parent_ids=[m.call_id for m in parent_models],
        reply_to="_INBOX.sqlpolicy",
    )
    row = await load_call(pool, nxt.call_id)
    assert row is not None
    assert LivePolicy.build("plas").base_for(row) == approx(plas_base(expected.completed, running))
    assert LivePolicy.build("atlas").base_for(row) == approx(expected.critical)
    exact = atlas_exact_base((m.plan.base, m.used) for m in parent_models)
    assert LivePolicy.build("atlas-exact").base_for(row) == approx(exact)

    # the anti-starvation pass's SQL prefilter is exactly the policy's preconditions: a waiting
    # call, not aged, below the top queue or (age rule on) of a program `is_aged` says is old
    cfg = StarvationConfig(age_s=AGE_S if age_rule else None)
    got = await starvation_candidates(pool, age_s=cfg.age_s)
    want = {
        m.call_id
        for m in models
        if m.rows["status"] in ("dispatched", "preempted")
        and not m.plan.aged
        and ((0 if m.promoted else m.plan.level) > 0 or is_aged(cfg, program_age_s))
    }
    assert {c.id for c in got if c.program_id == program} == want
