"""Deterministic checks of the SIMULATED engine model: latency, prefix caching, KV pressure,
tool delays, balancing, starvation and the public API."""

from __future__ import annotations

import math

import pytest

from autellix.policy import PreemptionCost, PreemptionMode
from autellix.sim import EngineProfile, list_policies, list_profiles, load_profile, simulate
from autellix.sim.cache import KVCache
from autellix.sim.profile import fit_latency
from autellix.workloads.types import CallSpec, ProgramSpec

PROF = EngineProfile(
    name="t",
    max_num_seqs=4,
    kv_capacity_tokens=100_000,
    base_s=0.01,
    decode_per_seq_s=0.001,
    decode_per_ctx_token_s=1e-6,
    prefill_per_token_s=1e-4,
)


def chat(pid: str, turns: list[tuple[int, int]], arrival: float = 0.0, delay: float = 0.0):
    """Single-threaded program; each turn adds `user` prompt tokens and `out` output tokens."""
    calls, hist = [], 0
    for i, (user, out) in enumerate(turns):
        calls.append(
            CallSpec(i, 0, (i - 1,) if i else (), hist + user, out, hist, delay if i else 0.0)
        )
        hist += user + out
    return ProgramSpec(pid, "chat", arrival, tuple(calls))


def test_single_call_latency_matches_profile() -> None:
    run = simulate([chat("a", [(500, 4)])], policy="fcfs", profile=PROF)
    prefill = PROF.base_s + PROF.prefill_per_token_s * 500
    decode = sum(PROF.step_seconds(1, 500 + j) for j in range(1, 4))  # tokens 2..4
    assert run.programs[0].latency_s == pytest.approx(prefill + decode)
    assert run.programs[0].waiting_s == 0


def test_prefix_cache_reuse_and_nocache() -> None:
    prog = chat("a", [(300, 10), (50, 10), (50, 10)])
    cached = simulate([prog], policy="fcfs", profile=PROF, block_size=1)
    plain = simulate([prog], policy="fcfs-nocache", profile=PROF)
    # second call reuses 310 tokens, third 370
    assert cached.programs[0].cached_prompt_tokens == 310 + 370
    assert plain.programs[0].cached_prompt_tokens == 0
    assert cached.programs[0].prompt_tokens == 300 + 360 + 420
    assert cached.programs[0].latency_s < plain.programs[0].latency_s
    assert cached.cache_hit_rate == pytest.approx(680 / 1080)
    # vLLM matches whole blocks only: with 16-token blocks 310 -> 304 and 370 -> 368
    blocks = simulate([prog], policy="fcfs", profile=PROF, block_size=16)
    assert blocks.programs[0].cached_prompt_tokens == 304 + 368


def test_lru_eviction_loses_the_prefix() -> None:
    # two programs alternate on a KV that holds only one context besides the running one
    small = PROF.replace(max_num_seqs=1, kv_capacity_tokens=1000)
    progs = [chat("a", [(600, 5), (10, 5)]), chat("b", [(600, 5), (10, 5)])]
    run = simulate(progs, policy="fcfs", profile=small)
    assert run.stats["evicted_tokens"] > 0
    assert sum(p.cached_prompt_tokens for p in run.programs) < 2 * 605


def test_eviction_trims_the_lru_entry_from_its_tail() -> None:
    kv = KVCache(1000)
    kv.put(1, 600)  # older
    kv.put(2, 300)
    kv.private = 250  # a running call needs room: 150 tokens must go
    kv.evict()
    assert kv.lookup(1) == 450 and kv.lookup(2) == 300 and kv.evicted == 150
    kv.private = 900  # now the whole of entry 1 and part of entry 2
    kv.evict()
    assert kv.lookup(1) == 0 and kv.lookup(2) == 100 and kv.held() + kv.lru_sum == 1000


def test_preempted_call_resumes_from_its_cached_kv() -> None:
    """Abort + resume with prefix caching: a preempted call's KV stays cached (evictable), so
    resuming soon recomputes at most a partial block, not its whole context."""
    one = PROF.replace(max_num_seqs=1)
    long = chat("long", [(2000, 300)])
    short = chat("short", [(10, 5)], arrival=0.5)
    run = simulate([long, short], policy="plas", profile=one, block_size=16, min_run_tokens=0)
    assert run.stats["priority_preemptions"] == 1
    assert 1 <= run.stats["recomputed_tokens"] <= 16
    # a big intruder on a small KV evicts the tail of the preempted context (vLLM frees a
    # request's blocks tail first): the resume recomputes that tail, and only that
    big = chat("big", [(1500, 5)], arrival=0.5)
    tight = one.replace(kv_capacity_tokens=3000)
    run = simulate([long, big], policy="plas", profile=tight, block_size=16, min_run_tokens=0)
    assert run.stats["priority_preemptions"] == 1
    assert 400 < run.stats["recomputed_tokens"] < 1000


def test_kv_pressure_preempts_and_conserves_work() -> None:
    tight = PROF.replace(kv_capacity_tokens=400)
    progs = [chat(f"p{i}", [(100, 120)]) for i in range(3)]
    for policy in ("fcfs", "atlas"):
        run = simulate(progs, policy=policy, profile=tight)
        assert run.stats["kv_preemptions"] > 0
        assert run.stats["decoded_tokens"] == 360
        # the KV binds: a preempted call's context is kept as an evictable cache entry, but the
        # calls still running need that room, so part of it is evicted and recomputed on resume
        assert run.stats["evicted_tokens"] > 0
        assert 0 < run.stats["recomputed_tokens"] < 3 * 220
    roomy = simulate(progs, policy="atlas", profile=PROF)
    assert roomy.stats["kv_preemptions"] == 0 and roomy.stats["recomputed_tokens"] == 0


def test_preemption_cap_spreads_preemptions_over_iterations() -> None:
    """`max_preemptions_per_step`: three better calls arrive together at a full batch; with a cap
    of one per iteration the three priority preemptions happen at three successive iteration
    boundaries, with a cap of three all at one."""
    three = PROF.replace(max_num_seqs=3)
    low = [chat(f"low{i}", [(10, 400)]) for i in range(3)]
    high = [chat(f"hi{i}", [(10, 20)], arrival=0.5) for i in range(3)]
    stops = {}
    for cap in (1, 3):
        run = simulate(
            low + high,
            policy="plas",
            profile=three,
            max_preemptions_per_step=cap,
            min_run_tokens=0,
            record_calls=True,
        )
        assert run.stats["priority_preemptions"] == 3 and run.stats["kv_preemptions"] == 0
        stops[cap] = sorted(r.runs[0][2] for r in run.call_records if len(r.runs) > 1)
    assert len(set(stops[3])) == 1
    assert len(set(stops[1])) == 3 and stops[1][0] == stops[3][0]
    # successive boundaries: each gap is one decode iteration of the (full) batch
    gaps = [b - a for a, b in zip(stops[1], stops[1][1:], strict=False)]
    assert all(0 < g < 2 * three.step_seconds(3, 3 * 500) for g in gaps)


def test_swap_preemption_recomputes_nothing() -> None:
    tight = PROF.replace(kv_capacity_tokens=400, swap_s_per_token=1e-5)
    progs = [chat(f"p{i}", [(100, 120)]) for i in range(3)]
    run = simulate(
        progs, policy="fcfs", profile=tight, preemption=PreemptionCost(PreemptionMode.SWAP)
    )
    assert run.preemptions > 0 and run.stats["recomputed_tokens"] == 0


def test_tool_delay_and_parents() -> None:
    prog = chat("a", [(10, 3), (10, 3)], delay=2.5)
    run = simulate([prog], policy="atlas", profile=PROF, record_calls=True)
    first, second = run.call_records
    assert second.issue_s == pytest.approx(first.finish_s + 2.5)
    assert run.programs[0].executing_s < run.programs[0].latency_s - 2.4


def test_zero_output_calls_and_empty_program() -> None:
    progs = [
        ProgramSpec("empty", "x", 1.0, ()),
        ProgramSpec("zero", "x", 0.0, (CallSpec(0, 0, (), 20, 0), CallSpec(1, 0, (0,), 20, 0))),
    ]
    run = simulate(progs, policy="plas", profile=PROF)
    out = {p.program_id: p for p in run.programs}
    assert out["empty"].finish_s == 1.0 and out["empty"].latency_s == 0
    assert out["zero"].finish_s == pytest.approx(2 * (PROF.base_s + 20 * 1e-4))


def test_many_parents_join() -> None:
    calls = [CallSpec(i, i, (), 10, 5 + i) for i in range(6)]
    calls.append(CallSpec(6, 0, tuple(range(6)), 10, 1))
    run = simulate(
        [ProgramSpec("fan", "x", 0.0, tuple(calls))],
        policy="atlas-exact",
        profile=PROF,
        record_calls=True,
    )
    recs = run.call_records
    assert recs[6].issue_s == pytest.approx(max(r.finish_s for r in recs[:6]))


def test_program_aware_policy_beats_fcfs_on_head_of_line_blocking() -> None:
    """One long program arrives first; short programs behind it wait under FCFS only."""
    one = PROF.replace(max_num_seqs=1)
    progs = [chat("long", [(10, 200)] * 5)] + [
        chat(f"s{i}", [(10, 5)], arrival=0.05 + 0.01 * i) for i in range(5)
    ]
    lat = {}
    for policy in ("fcfs", "mlfq", "plas", "atlas", "srpt"):
        run = simulate(progs, policy=policy, profile=one)
        lat[policy] = sum(p.latency_s for p in run.programs if p.program_id != "long")
    # the shorts wait until the long call leaves Q1 (64 tokens), then preempt it
    assert lat["plas"] < lat["fcfs"] / 2
    assert lat["atlas"] < lat["fcfs"] / 2
    assert lat["srpt"] <= lat["plas"] + 1e-9


def test_program_level_beats_call_level_on_many_short_calls() -> None:
    """A program of many short calls (call-level MLFQ re-admits each at Q1) vs single calls."""
    one = PROF.replace(max_num_seqs=1)
    many = chat("many", [(10, 40)] * 40)
    shorts = [chat(f"s{i}", [(10, 100)], arrival=1.0 + 0.5 * i) for i in range(8)]
    lat = {}
    for policy in ("mlfq", "plas"):
        run = simulate([many, *shorts], policy=policy, profile=one, quanta=(6, 32, 2))
        lat[policy] = sum(p.latency_s for p in run.programs if p.program_id != "many")
    assert lat["plas"] < lat["mlfq"]


def test_starvation_promotion_and_age_rule() -> None:
    one = PROF.replace(max_num_seqs=1)
    big = chat("big", [(10, 300)] * 4)
    stream = [chat(f"s{i}", [(10, 30)], arrival=0.1 * i) for i in range(80)]
    off = simulate([big, *stream], policy="atlas", profile=one, beta=None)
    paper = simulate([big, *stream], policy="atlas", profile=one, beta=1.0)
    aged = simulate([big, *stream], policy="atlas", profile=one, beta=None, age_s=2.0)
    finish = {
        n: {p.program_id: p.finish_s for p in r.programs}
        for n, r in (("off", off), ("paper", paper), ("aged", aged))
    }
    assert off.stats["promotions"] == 0
    assert paper.stats["promotions"] > 0 and aged.stats["promotions"] > 0
    assert finish["aged"]["big"] < finish["off"]["big"]
    assert finish["paper"]["big"] <= finish["off"]["big"]


def test_locality_balancer_keeps_long_programs_on_one_engine() -> None:
    progs = [chat(f"p{i}", [(3000, 20), (100, 20), (100, 20)], arrival=0.01 * i) for i in range(8)]
    rr = simulate(progs, policy="fcfs", profile=PROF, engines=2, balancer="round-robin")
    loc = simulate(progs, policy="fcfs", profile=PROF, engines=2, balancer="locality")
    assert loc.cache_hit_rate > rr.cache_hit_rate
    assert len(loc.engine_utilization) == 2 and all(u > 0 for u in loc.engine_utilization)


def test_locality_guard_stops_affinity_overloading_one_engine() -> None:
    """A program pinned to engine 0 fans out 150 long-prompt calls: pure affinity queues them
    all on engine 0 while engine 1 idles; the guard sends calls elsewhere once load is skewed."""
    root = CallSpec(0, 0, (), 3000, 5, 0)
    kids = tuple(CallSpec(i, i, (0,), 3015, 20, 3005) for i in range(1, 151))
    fan = ProgramSpec("fan", "x", 0.0, (root, *kids))
    kw = {"policy": "fcfs", "profile": PROF, "engines": 2, "balancer": "locality"}
    guarded = simulate([fan], **kw)
    pinned = simulate([fan], guard_abs=None, **kw)
    assert pinned.engine_utilization[1] == 0 and pinned.stats["guard_overrides"] == 0
    assert guarded.engine_utilization[1] > 0.2 and guarded.stats["guard_overrides"] > 0
    assert guarded.makespan_s < 0.8 * pinned.makespan_s


def test_api_surface() -> None:
    assert {"fcfs-nocache", "fcfs", "mlfq", "plas", "atlas", "srpt"} <= set(list_policies())
    assert {"cpu-tiny", "gpu-a100-llama8b"} <= set(list_profiles())
    gpu = load_profile("gpu-a100-llama8b")
    assert gpu.calibration == "published" and "A100" in gpu.source
    assert load_profile("unit").base_s == 1.0
    with pytest.raises(ValueError):
        load_profile("no-such-profile")
    with pytest.raises(TypeError):
        simulate([], policy="fcfs", profile=PROF, bogus=1)
    run = simulate([], policy="fcfs", profile=PROF)
    assert run.simulated and run.programs == [] and run.makespan_s == 0
    run = simulate([chat("a", [(10, 5)])], policy="fcfs", profile=PROF, max_num_seqs=2)
    assert math.isfinite(run.stats["mean_batch"]) and run.policy == "fcfs"


def test_fit_latency_recovers_coefficients() -> None:
    truth = PROF.replace(prefill_attn_s=2e-9)
    decode = [(n, n * c, truth.step_seconds(n, n * c)) for n in (1, 4, 16) for c in (100, 900)]
    prefill = [(p, p * p, truth.step_seconds(0, 0, p, p * p)) for p in (128, 512, 2048)]
    fit = fit_latency(decode, prefill)
    assert fit["base_s"] == pytest.approx(truth.base_s)
    assert fit["decode_per_seq_s"] == pytest.approx(truth.decode_per_seq_s)
    assert fit["decode_per_ctx_token_s"] == pytest.approx(truth.decode_per_ctx_token_s)
    assert fit["prefill_per_token_s"] == pytest.approx(truth.prefill_per_token_s)
    assert fit["prefill_attn_s"] == pytest.approx(2e-9)
