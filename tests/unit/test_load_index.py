"""The balancer's load index picks what the list form of the same rule picks.

`choose_engine` is one rule; the scheduler asks it over a `LoadIndex` (no scan per call), the
simulator over a plain list. After any sequence of load changes, additions and removals, both
forms must give the same engine and pin for every balancer kind, prompt length, pin and counter.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.policy.balance import BalancerConfig, BalancerKind, choose_engine, skewed
from autellix.policy.load_index import LoadIndex
from autellix.services.scheduler.engines import EngineRegistry
from autellix.wire.protocol import EngineHeartbeat

IDS = [f"e{i:02d}" for i in range(12)]

ops = st.lists(
    st.tuples(st.sampled_from(IDS), st.one_of(st.none(), st.integers(0, 40))),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=ops,
    kind=st.sampled_from(list(BalancerKind)),
    tokens=st.sampled_from([10, 5000]),
    pin_pick=st.integers(0, 20),
    counter=st.integers(0, 50),
    guard=st.sampled_from([None, 3.0, 64.0]),
)
def test_index_and_list_choose_the_same_engine(
    ops: list[tuple[str, int | None]],
    kind: BalancerKind,
    tokens: int,
    pin_pick: int,
    counter: int,
    guard: float | None,
) -> None:
    idx = LoadIndex()
    ref: dict[str, float] = {}
    for eid, load in ops:  # None: the engine leaves
        if load is None:
            idx.discard(eid)
            ref.pop(eid, None)
        else:
            idx.set(eid, float(load))
            ref[eid] = float(load)
    ids = sorted(ref)
    assert idx.ids() == ids and len(idx) == len(ids)
    if not ids:
        return
    loads = [ref[e] for e in ids]
    assert (idx.lowest(), idx.highest()) == (min(loads), max(loads))
    cfg = BalancerConfig(kind=kind, short_prompt_tokens=2048, guard_abs=guard)
    assert skewed(idx, cfg) == skewed(loads, cfg)
    pin = pin_pick if pin_pick < len(ids) else None
    a = choose_engine(cfg, loads=loads, prompt_tokens=tokens, pin=pin, counter=counter)
    b = choose_engine(cfg, loads=idx, prompt_tokens=tokens, pin=pin, counter=counter)
    assert a == b


def test_index_memory_stays_bounded_under_churn() -> None:
    idx = LoadIndex()
    for i in range(20_000):
        idx.set(IDS[i % len(IDS)], float(i % 7))
    assert len(idx._min) <= 4 * len(IDS) + 64 + 1  # rebuilt, not grown per update


def _hb(eid: str, *, running: int = 0, draining: bool = False, model: str = "m") -> EngineHeartbeat:
    return EngineHeartbeat(
        engine_id=eid,
        backend="sim",
        model=model,
        max_batch=8,
        running=running,
        waiting=0,
        kv_cache_usage=0.0,
        draining=draining,
        at=datetime.now(UTC),
    )


def test_registry_indexes_by_model_and_forgets_stale_and_draining_engines() -> None:
    reg = EngineRegistry(stale_after_s=0.2)
    reg.on_heartbeat(_hb("a", running=3))
    reg.on_heartbeat(_hb("b", running=1))
    reg.on_heartbeat(_hb("c", model="other"))
    every, m = reg.candidates(None), reg.candidates("m")
    assert every is not None and every.ids() == ["a", "b", "c"]
    assert m is not None and m.id_at(m.least()) == "b"
    assert reg.candidates("nobody-serves-this") is None
    reg.note_dispatch("b")
    reg.note_dispatch("b")
    assert m.load_of("b") == 3.0 and m.id_at(m.least()) == "a"  # tie: lowest id
    reg.on_heartbeat(_hb("a", draining=True))
    assert m.ids() == ["b"]
    time.sleep(0.25)
    reg.on_heartbeat(_hb("c", model="other"))  # only c is heard from again
    assert reg.candidates("m") is None and reg.has_live()
    assert [v.id for v in reg.live()] == ["c"]
