"""Unit tests of the pure policy rules: MLFQ bins, PLAS/ATLAS accounting, starvation, batching,
load balancing and the policy registry."""

from __future__ import annotations

import math

import pytest

from autellix.policy import (
    BalancerConfig,
    BalancerKind,
    Candidate,
    MLFQConfig,
    PriorityKind,
    ProgramService,
    StarvationConfig,
    atlas_exact_base,
    atlas_update,
    call_rank,
    choose_engine,
    get_policy,
    list_policies,
    plan_batch,
    plas_base,
    promotion_time,
    should_promote,
)
from autellix.policy.starvation import wait_ratio

# ---------------------------------------------------------------- MLFQ


def test_geometric_boundaries_and_levels() -> None:
    cfg = MLFQConfig.geometric(levels=4, first_quantum=10, growth=2)
    assert cfg.boundaries == (10, 20, 40)
    assert cfg.levels == 4
    assert [cfg.level_for(v) for v in (0, 9.99, 10, 19, 20, 39, 40, 10**9)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert [cfg.quantum(i) for i in range(4)] == [10, 10, 20, math.inf]
    assert cfg.upper(0) == 10 and cfg.upper(10) == 20 and cfg.upper(40) == math.inf


def test_continuous_levels_change_every_unit() -> None:
    cfg = MLFQConfig.continuous()
    assert cfg.level_for(3.0) == 3.0
    assert cfg.upper(3.0) == 4.0
    assert cfg.upper(3.5) == 4.0


@pytest.mark.parametrize("bad", [(0.0, 1.0), (2.0, 1.0), (1.0, 1.0)])
def test_bad_boundaries_rejected(bad: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        MLFQConfig(bad)


# ---------------------------------------------------------------- PLAS / ATLAS


def test_atlas_scalar_rule_is_monotone() -> None:
    assert atlas_update(10, 4, 3) == 10  # a short side thread cannot lower the program's service
    assert atlas_update(10, 8, 5) == 13
    assert atlas_update(0, 0, 0) == 0  # zero-length output leaves it unchanged


def test_single_threaded_program_plas_equals_atlas() -> None:
    svc = ProgramService()
    for used in (4, 3, 0, 1):
        base_p = svc.base_for(PriorityKind.PLAS)
        base_a = svc.base_for(PriorityKind.ATLAS)
        assert base_p == base_a
        svc = svc.finish(base_a, used)
    assert svc.completed == svc.critical == 8  # a program whose calls all finished


def test_parallel_threads_differ_between_plas_and_atlas() -> None:
    # two parallel threads of 5 each, from the same base: PLAS sums, ATLAS takes the longest
    svc = ProgramService().finish(0, 5).finish(0, 5)
    assert svc.base_for(PriorityKind.PLAS) == 10
    assert svc.base_for(PriorityKind.ATLAS) == 5
    assert plas_base(10, [2, 3]) == 15  # running calls' progress counts for PLAS


def test_exact_atlas_many_parents() -> None:
    assert atlas_exact_base([]) == 0  # root
    parents = [(0, 5), (2, 1), (7, 0), (3, 4)]  # (p(k), t(k))
    assert atlas_exact_base(parents) == 7
    assert atlas_exact_base([(p, t) for p, t in parents if t == 0]) == 7


def test_fcfs_and_call_level_bases_are_zero() -> None:
    svc = ProgramService(completed=50, critical=20)
    assert svc.base_for(PriorityKind.CALL) == 0
    assert svc.base_for(PriorityKind.FCFS) == 0


# ---------------------------------------------------------------- starvation


def test_paper_ratio_rule() -> None:
    cfg = StarvationConfig(beta=2.0, eps=0.1)
    assert wait_ratio(1, 1, 0, 0, 0.1) == pytest.approx(20)
    assert should_promote(cfg, w_p=1, w_c=1, t_p=1, t_c=0) is True  # 2/1 >= 2 (boundary)
    assert should_promote(cfg, w_p=1, w_c=0.9, t_p=1, t_c=0) is False
    assert should_promote(StarvationConfig(beta=None), w_p=100, w_c=100, t_p=0, t_c=0) is False


def test_promotion_time_is_when_ratio_crosses_beta() -> None:
    cfg = StarvationConfig(beta=3.0, eps=0.1)
    t = promotion_time(cfg, now=10, w_p=1, w_c=0.5, t_p=1, t_c=0, program_arrival_s=0)
    assert t == pytest.approx(11.5)  # waiting 1.5 s more makes (1+2)/1 = 3
    assert should_promote(cfg, w_p=1, w_c=0.5 + (t - 10), t_p=1, t_c=0)
    assert (
        promotion_time(
            StarvationConfig(beta=None), now=0, w_p=0, w_c=0, t_p=0, t_c=0, program_arrival_s=0
        )
        == math.inf
    )


def test_age_rule_beyond_paper() -> None:
    cfg = StarvationConfig(beta=None, age_s=60)
    assert promotion_time(cfg, now=10, w_p=0, w_c=0, t_p=5, t_c=0, program_arrival_s=5) == 65
    assert should_promote(cfg, w_p=0, w_c=0, t_p=100, t_c=0, program_age_s=60)
    assert not should_promote(cfg, w_p=0, w_c=0, t_p=100, t_c=0, program_age_s=59)


# ---------------------------------------------------------------- batch formation


def _c(cid: str, level: float, tb: float, running: bool, kv: int = 0) -> Candidate:
    return Candidate(cid, (level, tb), running, kv)


def test_admit_in_order_until_full() -> None:
    plan = plan_batch(
        [_c("a", 1, 0, False), _c("b", 0, 5, False), _c("c", 0, 1, False)], max_seqs=2
    )
    assert plan.admit == ["c", "b"] and plan.preempt == []


def test_stop_at_first_that_does_not_fit() -> None:
    # "big" is first in order and does not fit in KV: "small" must not skip past it
    plan = plan_batch(
        [_c("big", 0, 0, False, kv=90), _c("small", 1, 0, False, kv=5), _c("r", 0, -1, True, 20)],
        max_seqs=4,
        kv_capacity=100,
        preemptive=False,
    )
    assert plan.admit == [] and plan.preempt == []


def test_higher_priority_preempts_lowest_running() -> None:
    cands = [_c("r0", 0, 0, True), _c("r2", 2, 1, True), _c("r1", 1, 2, True), _c("w", 0, 3, False)]
    plan = plan_batch(cands, max_seqs=3)
    assert plan.preempt == ["r2"] and plan.admit == ["w"]


def test_ties_keep_the_running_call() -> None:
    plan = plan_batch([_c("r", 1, 9, True), _c("w", 1, 0, False)], max_seqs=1)
    assert plan.admit == [] and plan.preempt == []


def test_preemption_cap_per_step() -> None:
    cands = [
        _c("r1", 3, 0, True),
        _c("r2", 3, 1, True),
        _c("w1", 0, 0, False),
        _c("w2", 0, 1, False),
    ]
    assert plan_batch(cands, max_seqs=2, max_preemptions=1).admit == ["w1"]
    plan = plan_batch(cands, max_seqs=2, max_preemptions=2)
    assert plan.admit == ["w1", "w2"] and sorted(plan.preempt) == ["r1", "r2"]


def test_protected_runs_are_skipped_as_victims() -> None:
    young = Candidate("young", (3, 1), True, protected=True)
    cands = [young, _c("old", 2, 0, True), _c("w", 0, 0, False)]
    plan = plan_batch(cands, max_seqs=2)
    assert plan.preempt == ["old"] and plan.admit == ["w"]
    # only protected calls rank below the waiting call: nothing is preempted
    plan = plan_batch([young, _c("r", 0, 0, True), _c("w", 1, 0, False)], max_seqs=2)
    assert plan.preempt == [] and plan.admit == []


def test_no_useless_preemption_when_kv_cannot_fit() -> None:
    cands = [_c("r", 5, 0, True, kv=10), _c("w", 0, 0, False, kv=200)]
    plan = plan_batch(cands, max_seqs=4, kv_capacity=100, max_preemptions=4)
    assert plan.preempt == [] and plan.admit == []


# ---------------------------------------------------------------- load balancing


def test_round_robin_and_least_loaded() -> None:
    rr = BalancerConfig(kind=BalancerKind.ROUND_ROBIN)
    assert [
        choose_engine(rr, loads=[9, 0, 0], prompt_tokens=1, pin=None, counter=i).engine
        for i in range(4)
    ] == [0, 1, 2, 0]
    ll = BalancerConfig(kind=BalancerKind.LEAST_LOADED)
    assert (
        choose_engine(ll, loads=[3, 1, 1], prompt_tokens=10_000, pin=0).engine == 1
    )  # tie: lowest


def test_locality_short_prompts_go_least_used_long_ones_pin() -> None:
    cfg = BalancerConfig()
    assert choose_engine(cfg, loads=[5, 2], prompt_tokens=2048, pin=0).engine == 1
    first = choose_engine(cfg, loads=[5, 2], prompt_tokens=2049, pin=None)
    assert first.engine == 1 and first.pin == 1  # pinned at its first long call
    again = choose_engine(cfg, loads=[5, 9], prompt_tokens=4000, pin=first.pin)
    assert again.engine == 1  # affinity honoured while load is not skewed


def test_locality_guard_breaks_affinity_when_skewed() -> None:
    cfg = BalancerConfig(guard_abs=64, guard_ratio=1.5)
    assert choose_engine(cfg, loads=[10, 100], prompt_tokens=4000, pin=1).engine == 0
    # spread 50 <= 64: not skewed, the pin holds
    assert choose_engine(cfg, loads=[50, 100], prompt_tokens=4000, pin=1).engine == 1
    off = BalancerConfig(guard_abs=None)
    assert choose_engine(off, loads=[10, 100], prompt_tokens=4000, pin=1).engine == 1


# ---------------------------------------------------------------- registry


def test_registry_names_and_overrides() -> None:
    names = list_policies()
    for n in ("fcfs-nocache", "fcfs", "mlfq", "srpt", "plas", "atlas"):
        assert n in names
    assert get_policy("fcfs-nocache").prefix_caching is False
    assert get_policy("fcfs").preemptive is False
    assert get_policy("mlfq").priority is PriorityKind.CALL
    assert get_policy("srpt").oracle
    v = get_policy("atlas", starvation=StarvationConfig(beta=None))
    assert v.starvation.beta is None and get_policy("atlas").starvation.beta is not None
    # plas-np: vLLM's priority queue given PLAS's value (issue 6's approach 2), modelled: the
    # same waiting order as PLAS by exact service, never preempting, no anti-starvation
    np_ = get_policy("plas-np")
    assert not np_.preemptive and np_.starvation.beta is None and np_.starvation.age_s is None
    kw = {"value": 100.0, "issue_s": 5.0, "program_arrival_s": 1.0}
    assert call_rank(np_, **kw) == call_rank(get_policy("plas", within_level="service"), **kw)
    assert call_rank(np_, **kw) < call_rank(np_, **{**kw, "value": 101.0})
    with pytest.raises(KeyError):
        get_policy("nope")
    with pytest.raises(ValueError):
        get_policy("plas", within_level="thread")


# ---------------------------------------------------------------- ranks


def test_call_rank_per_policy() -> None:
    kw = {"value": 100.0, "issue_s": 5.0, "program_arrival_s": 1.0}
    assert call_rank(get_policy("fcfs"), **kw) == (0, 5.0)
    assert call_rank(get_policy("mlfq"), **kw) == (1, 5.0)  # 100 in [64, 128)
    assert call_rank(get_policy("plas"), **kw) == (1, 1.0)  # program order inside a queue
    assert call_rank(get_policy("plas", within_level="call"), **kw) == (1, 5.0)
    assert call_rank(get_policy("atlas"), aged=True, **kw) == (0, 1.0)
    assert call_rank(get_policy("srpt"), remaining=42, **kw) == (42, 5.0)
