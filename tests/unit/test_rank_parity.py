"""The live scheduler and the simulator issue a call with the same base, level, order and
anti-starvation outcome when they see the same program state.

Live: `LivePolicy.decide` over a `CallRow` (what the scheduler loads from the program table).
Simulated: the `Simulator`'s own issue path (`_issue`: service base, tiebreak, enqueue with the
anti-starvation check) over a program whose records hold the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from builders import call_row

from autellix.policy import ProgramService, get_policy
from autellix.policy.gittins import GittinsHistory, GittinsTables
from autellix.services.scheduler.decide import LivePolicy
from autellix.services.scheduler.engines import EngineView
from autellix.sim.core import Simulator
from autellix.sim.profile import EngineProfile
from autellix.sim.state import DONE, RUNNING
from autellix.store.dispatch import CallRow
from autellix.workloads.types import CallSpec, ProgramSpec

POLICIES = ("fcfs", "mlfq", "plas", "plas-np", "atlas", "atlas-exact")


def _state(rng: random.Random) -> dict[str, float | list[float]]:
    n = rng.randint(0, 3)
    return {
        "completed": float(rng.choice((0, 10, 70, 300, 5000))),
        "critical": float(rng.choice((0, 40, 130, 900))),
        "progress": [float(rng.randint(0, 200)) for _ in range(n)],
        "parents_base": [float(rng.choice((0, 60, 500))) for _ in range(n)],
        "wait": rng.choice((0.0, 0.5, 3.0, 7.0, 40.0)),
        "run": rng.choice((0.0, 0.01, 0.5, 1.0, 2.0)),
        "age": rng.choice((1.0, 30.0, 700.0)),
    }


Issued = tuple[float, float, float, bool, bool]  # rank base, level, tiebreak, aged, promoted


Guard = dict[str, float]  # sticky-rule overrides: age_s and/or slowdown (the tail guard)


def _simulated(policy: str, st: dict, guard: Guard) -> Issued:
    """The new call as the simulator issues it."""
    parents = st["parents_base"]
    n = len(parents)
    calls = tuple(CallSpec(i, 0, (), 8, 1000) for i in range(n))
    calls += (CallSpec(n, 0, tuple(range(n)), 8, 10),)
    spec = ProgramSpec("p", "parity", 0.0, calls)
    cfg = get_policy(policy)
    if guard:
        cfg = cfg.replace(starvation=dataclasses.replace(cfg.starvation, **guard))
    sim = Simulator([spec], cfg, EngineProfile.unit(max_num_seqs=64))
    new = _load_state(sim, st, finished_parents=policy == "atlas-exact")
    sim._issue(new, st["age"])
    promoted = sim.promotions > 0 and not new.aged
    return new.base, float(new.lvl), new.tb, new.aged, promoted


def _load_state(sim: Simulator, st: dict, *, finished_parents: bool = False) -> Any:
    """Give the simulator's one program the state `st` and return its call about to issue.

    finished_parents (atlas-exact): a call is issued once its parents have finished; otherwise
    the others run (PLAS counts their progress): half folded in, half in this run."""
    n = len(st["progress"])
    prog, engine = sim.progs[0], sim.engines[0]
    prog.service = ProgramService(completed=st["completed"], critical=st["critical"])
    prog.wp, prog.tp = st["wait"], st["run"]
    engine.step = 1000
    new = None
    for c in _calls(sim):
        if c.spec.index == n:
            new = c
            continue
        done = st["progress"][c.spec.index]
        c.base0 = st["parents_base"][c.spec.index]
        if finished_parents:
            c.state, c.used = DONE, done
            continue
        c.state, c.eng = RUNNING, engine
        c.used = float(int(done) // 2)
        c.admit_step = engine.step - (int(done) - int(done) // 2)
        prog.running.add(c)
    assert new is not None
    return new


def _calls(sim: Simulator) -> list:
    out = []
    for _, _, _, obj, _ in sim.events:
        out.append(obj)
        out.extend(obj.children)
    return out


def _row(st: dict, **fields: Any) -> CallRow:
    """The new call's row as the scheduler loads it, from the program state `st` (the
    simulator's `_load_state` gives its program the same numbers)."""
    return call_row(
        id="c",
        reply_to="_INBOX.c",
        program_service=st["critical"],
        program_status="active",
        accepted_s=st["age"],
        now_s=st["age"],
        program_created_s=0.0,
        program_completed=st["completed"],
        program_wait_s=st["wait"],
        program_run_s=st["run"],
        prompt_ids_len=8,
        **fields,
    )


def _live(policy: str, st: dict, guard: Guard) -> Issued:
    """The new call as the live scheduler decides it."""
    live = LivePolicy.build(policy, **guard)  # type: ignore[arg-type]
    progress = st["progress"]
    row = _row(
        st,
        program_attained=st["completed"] + (0.0 if policy == "atlas-exact" else sum(progress)),
        parent_ids=[f"c{i}" for i in range(len(progress))],
        parents_base=list(st["parents_base"]),
        parents_service=list(progress),
    )
    engines = [EngineView(id="e0", backend="sim", model="simulated", max_batch=64)]
    d = live.decide(row, engines)
    assert d is not None
    return d.rank_base, float(d.level), d.tiebreak, d.aged, d.restart


_GUARDED = ("mlfq", "plas", "atlas", "atlas-exact", "gittins")


@pytest.mark.parametrize(
    ("policy", "guard"),
    [(p, {}) for p in POLICIES]
    + [(p, {"age_s": 600.0}) for p in _GUARDED]
    + [(p, {"slowdown": 20.0}) for p in _GUARDED]
    + [("atlas", {"age_s": 600.0, "slowdown": 20.0})],
    ids=str,
)
def test_scheduler_and_simulator_issue_calls_at_the_same_rank(policy: str, guard: Guard) -> None:
    rng = random.Random(f"{policy}-{sorted(guard.items())}")
    outcomes = set()
    for _ in range(150):
        st = _state(rng)
        sim, live = _simulated(policy, st, guard), _live(policy, st, guard)
        assert live == sim, st
        outcomes.add((sim[1] > 0, sim[4], sim[3]))  # (below Q1, promoted, aged)
    if policy in ("plas", "atlas", "atlas-exact"):  # every rule is exercised
        assert (True, False, False) in outcomes  # issued below the top queue
        assert (False, True, False) in outcomes  # promoted at issue (paper's ratio rule)
    if guard and policy != "mlfq":
        assert (False, False, True) in outcomes  # aged (old or slowed-down program)
    if guard.get("slowdown") and policy != "mlfq":
        # the slowdown rule, not only age, decides: one age (30 s) ages a program that has run
        # little and spares one that has run long
        assert _simulated(policy, {**st, "age": 30.0, "run": 0.5}, guard)[3]
        assert not _simulated(policy, {**st, "age": 30.0, "run": 2.0}, guard)[3] or (
            guard.get("age_s", 1e9) <= 30.0
        )


def _gittins_tables() -> GittinsTables:
    """Tables learned from a few hundred finished programs of two classes, plus hinted calls."""
    cfg = get_policy("gittins").gittins
    assert cfg is not None
    rng = random.Random(11)
    hist = GittinsHistory(cfg)
    for _ in range(300):
        size = rng.choice((40.0, 90.0, 400.0)) * rng.uniform(0.5, 2.0)
        hist.add("chat", size, size)
        big = rng.uniform(800.0, 9000.0)
        hist.add("search", big, big)
        hist.add_hint("chat", 100.0, rng.uniform(80.0, 130.0), 300.0)
    return hist.tables()


@pytest.mark.parametrize("labels", ["chat", "search", None, "chat+hint", "unseen+hint"])
def test_scheduler_and_simulator_rank_gittins_calls_alike(labels: str | None) -> None:
    """The same program state, class and hint give the same effective size, level and order in
    the live scheduler (metadata of the stored request) and the simulator (issue path)."""
    tables = _gittins_tables()
    cls, _, hinted = (labels or "").partition("+")
    hint = 100.0 if hinted else None
    rng = random.Random(f"gittins-{labels}")
    levels = set()
    for _ in range(150):
        st = _state(rng)
        n = len(st["progress"])
        calls = tuple(CallSpec(i, 0, (), 8, 1000) for i in range(n))
        calls += (CallSpec(n, 0, tuple(range(n)), 8, 10),)
        sim = Simulator(
            [ProgramSpec("p", "parity", 0.0, calls)],
            get_policy("gittins"),
            EngineProfile.unit(max_num_seqs=64),
        )
        sim.gtables = tables
        prog = sim.progs[0]
        prog.pclass = cls
        if hint is not None:
            sim.hint_sigma = 0.0
            prog.remaining_out = int(hint)
        new = _load_state(sim, st)
        sim._issue(new, st["age"])
        simulated = (new.base, float(new.lvl), new.tb, new.aged, sim.promotions > 0)

        live = LivePolicy.build("gittins")
        assert live.gittins is not None
        live.gittins.tables = tables
        meta = {} if not cls else {"autellix.class": cls}
        if hint is not None:
            meta["autellix.hint"] = str(hint)
        row = _row(
            st,
            request_json=json.dumps({"metadata": meta}),
            program_attained=st["completed"] + sum(st["progress"]),
        )
        d = live.decide(row, [EngineView(id="e0", backend="sim", model="simulated", max_batch=64)])
        assert d is not None
        assert (d.rank_base, float(d.level), d.tiebreak, d.aged, d.restart) == simulated, st
        if not d.restart:
            assert "Gittins index" in d.reason and f"class {cls or '(none)'}" in d.reason
        levels.add(d.level)
    if hint is None:
        assert len(levels) > 1  # the index, not a constant, decides the level
