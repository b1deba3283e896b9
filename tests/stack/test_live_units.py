"""The live scheduler's decisions as plain functions (no processes): they are the policy core's
rules applied to program-table rows, and its fast Dispatch encoding is the protocol's."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from builders import call_row
from polling import poll_until

from autellix.policy import MLFQConfig, ProgramService, call_rank, get_policy, should_promote
from autellix.policy.registry import MIN_RUN_TOKENS
from autellix.policy.starvation import check_waiting
from autellix.services.scheduler.decide import LivePolicy, prompt_tokens
from autellix.services.scheduler.dispatcher import dispatch_payload, passthrough_trace
from autellix.services.scheduler.engines import EngineView
from autellix.store.dispatch import CallRow
from autellix.store.levels import StarvationRow
from autellix.wire.protocol import NEVER_PREEMPT, CallRequest, Dispatch, SamplingParams, encode

NOW = 1_764_000_000.0


def _row(**kw: object) -> CallRow:
    req = CallRequest(
        program_id="p", prompt_token_ids=[1, 2, 3], sampling=SamplingParams(max_tokens=9)
    )
    defaults: dict[str, object] = {
        "request_json": req.model_dump_json(exclude_none=True),
        "accepted_at": datetime.fromtimestamp(NOW, UTC),
        "accepted_s": NOW,
        "program_created_s": NOW - 10,
        "now_s": NOW + 0.001,
        "prompt_ids_len": 3,
    }
    return call_row(**(defaults | kw))


def _engines(*loads: int) -> list[EngineView]:
    return [
        EngineView(id=f"e{i}", backend="sim", model="m", max_batch=8, running=x)
        for i, x in enumerate(loads)
    ]


def test_dispatch_payload_is_the_protocol_encoding() -> None:
    call = _row(output_token_ids=[5, 6], service=2.0, run_s=0.25, attempts=1, control_seq=3)
    fast = dispatch_payload(
        call,
        attempt=1,
        level=2,
        priority=70.5,
        tiebreak=NOW - 10,
        trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        min_run_tokens=16,
        prefill_weight=0.5,
    )
    model = Dispatch(
        call_id=call.id,
        program_id=call.program_id,
        thread_id=call.thread_id,
        reply_to=call.reply_to,
        level=2,
        priority=70.5,
        attempt=1,
        request=CallRequest.model_validate_json(call.request_json),
        resume_token_ids=[5, 6],
        accepted_at=call.accepted_at,
        trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        tiebreak=NOW - 10,
        min_run_tokens=16,
        prefill_weight=0.5,
        resume_service=2.0,
        resume_run_s=0.25,
        control_seq=3,
    )
    assert Dispatch.model_validate_json(fast) == Dispatch.model_validate_json(encode(model))
    assert passthrough_trace({"traceparent": "x", "Nats-Msg-Id": "y"}) == {"traceparent": "x"}
    assert passthrough_trace(None) == {}


def test_a_resumed_dispatch_carries_the_saved_logprobs_and_the_engine_keeps_them() -> None:
    """A moved call that asked for logprobs: the scheduler splices the row's logprobs (as the
    engine wrote them) into the Dispatch, the next engine starts from them, and its answer and
    its own progress saves hold one entry per token. Saved logprobs that do not cover every
    resumed token are not used (a list with a hole would misalign the answer)."""
    from autellix.services.engine.call import EngineCall
    from autellix.wire.protocol import TOKEN_LOGPROBS, TokenLogprob, TopLogprob

    def entry(tid: int) -> TokenLogprob:
        top = TopLogprob(token_id=tid, token=f"t{tid}", logprob=-0.5, bytes=list(b"t"))
        return TokenLogprob(**top.model_dump(), top_logprobs=[top])

    req = CallRequest(
        program_id="p",
        prompt_token_ids=[1, 2, 3],
        sampling=SamplingParams(max_tokens=9, logprobs=1),
    )
    saved = TOKEN_LOGPROBS.dump_json([entry(5), entry(6)]).decode()
    call = _row(
        request_json=req.model_dump_json(exclude_none=True),
        output_token_ids=[5, 6],
        logprobs_json=saved,
        attempts=1,
    )
    payload = dispatch_payload(call, attempt=1, level=0, priority=0.0, tiebreak=NOW, trace={})
    d = Dispatch.model_validate_json(payload)
    assert d.resume_token_ids == [5, 6] and d.resume_logprobs == [entry(5), entry(6)]
    ec = EngineCall(d, level=0)
    ec.tokens.append(7)
    ec.logprobs.append(entry(7))
    ec.sent = 3
    assert ec.logprobs_of(0, 3) == [entry(5), entry(6), entry(7)]
    assert ec.logprobs_of(2, 3) == [entry(7)]  # a delta carries only its own tokens' entries
    cid, att, toks, lps = ec.progress()
    assert (cid, att, toks) == (call.id, ec.attempts, [5, 6, 7])
    assert TOKEN_LOGPROBS.validate_json(lps or "") == [entry(5), entry(6), entry(7)]
    # a first attempt (no resume) carries none; a call that did not ask never has any
    fresh = dispatch_payload(
        replace(call, output_token_ids=None),
        attempt=1,
        level=0,
        priority=0.0,
        tiebreak=NOW,
        trace={},
    )
    assert Dispatch.model_validate_json(fresh).resume_logprobs is None
    plain = _row(output_token_ids=[5, 6], attempts=1)
    pd = Dispatch.model_validate_json(
        dispatch_payload(plain, attempt=1, level=0, priority=0.0, tiebreak=NOW, trace={})
    )
    assert pd.resume_logprobs is None and EngineCall(pd, level=0).progress()[3] is None
    # saved logprobs for fewer tokens than resumed: this engine's own start later, none saved
    short = d.model_copy(update={"resume_logprobs": [entry(5)]})
    sc = EngineCall(short, level=0)
    sc.tokens.append(7)
    sc.logprobs.append(entry(7))
    sc.sent = 3
    assert sc.logprobs_of(0, 3) == [entry(7)] and sc.progress()[3] is None


@pytest.mark.parametrize("name", ["plas", "plas-np", "atlas", "atlas-exact", "mlfq", "fcfs"])
def test_decide_uses_the_policy_core(name: str) -> None:
    live = LivePolicy.build(name)
    cfg = get_policy(name)
    call = _row(
        program_completed=100.0,
        program_attained=130.0,  # 30 units of progress of an unfinished sibling
        program_service=80.0,
        parents_base=[10.0, 40.0],
        parents_service=[20.0, 5.0],
    )
    d = live.decide(call, _engines(0))
    assert d is not None
    expect_base = {
        "plas": ProgramService(100.0, 80.0).base_for(cfg.priority, [30.0]),  # 130
        "plas-np": 130.0,
        "atlas": 80.0,
        "atlas-exact": 45.0,  # max(10 + 20, 40 + 5)
        "mlfq": 0.0,
        "fcfs": 0.0,
    }[name]
    assert d.priority == expect_base and d.rank_base == expect_base
    level, tiebreak = call_rank(
        cfg, value=expect_base, issue_s=NOW, program_arrival_s=NOW - 10, aged=False
    )
    assert (d.level, d.tiebreak) == (level, tiebreak)
    assert f"level {d.level}" in d.reason


def test_dispatch_protects_runs_as_the_policy_preempts() -> None:
    """The engine preempts for any strictly better level, so what a Dispatch carries decides
    whether the policy preempts: plas-np (levels, no preemption) protects every run for good."""
    assert LivePolicy.build("plas").min_run_tokens == MIN_RUN_TOKENS
    assert LivePolicy.build("plas", min_run_tokens=0).min_run_tokens == 0
    assert LivePolicy.build("plas-np").min_run_tokens == NEVER_PREEMPT
    assert LivePolicy.build("plas-np", min_run_tokens=5).min_run_tokens == NEVER_PREEMPT
    assert LivePolicy.build("fcfs").min_run_tokens == 0  # one level: nothing to protect


def test_redispatch_keeps_what_the_call_was_issued_with() -> None:
    live = LivePolicy.build("atlas")
    call = _row(
        attempts=1,
        priority=50.0,
        rank_base=-20.0,  # promoted once
        service=90.0,
        tiebreak=NOW - 10,
        program_service=500.0,  # the program moved on meanwhile: irrelevant for this call
    )
    d = live.decide(call, _engines(0))
    assert d is not None and d.priority == 50.0 and d.rank_base == -20.0
    assert d.level == MLFQConfig().level_for(70.0)


def test_promotion_and_aging_follow_the_starvation_rules() -> None:
    live = LivePolicy.build("atlas", beta=2.0, age_s="default")
    st = live.policy.starvation
    row = StarvationRow(
        id="c",
        program_id="p",
        engine_id="e0",
        status="preempted",
        level=3,
        service=40.0,
        rank_base=300.0,
        run_s=1.0,
        reset_s=NOW - 5.0,
        reset_run_s=0.0,
        program_created_s=NOW - 60,
        program_wait_s=0.5,
        program_run_s=2.0,
        now_s=NOW,
    )
    # W_c = 5 - 1 = 4, T_c = 1: (0.5 + 4) / (2 + 1) = 1.5 < 2
    assert not should_promote(st, w_p=0.5, w_c=4.0, t_p=2.0, t_c=1.0)
    assert live.promotion(row) is None
    later = replace(row, now_s=NOW + 2.0)  # (0.5 + 6) / 3 = 2.17 >= 2
    change = live.promotion(later)
    assert change is not None and change.to_level == 0 and change.restart
    assert ">= beta 2" in change.reason
    assert live.promotion(replace(later, level=0)) is None  # already in the top queue
    aging = LivePolicy.build("plas", age_s=30.0)
    aged = aging.promotion(replace(row, now_s=NOW))  # the program is 60 s old
    assert aged is not None and aged.aged and aged.tiebreak == NOW - 60 and not aged.restart
    heavy = _row(program_service=10_000.0, program_completed=10_000.0)  # program 10 s old
    d = aging.decide(heavy, _engines(0))
    assert d is not None and not d.aged and d.level == 8
    d = LivePolicy.build("plas", age_s=5.0).decide(heavy, _engines(0))
    assert d is not None and d.aged and d.level == 0 and d.tiebreak == NOW - 10


def test_the_tail_guard_ages_by_slowdown_in_the_pass_as_the_simulator_does() -> None:
    """The slowdown rule (age >= slowdown x max(floor, T_p + T_c)) fires in the anti-starvation
    pass exactly when the simulator's `check_waiting` says so for the same numbers, and the
    reason names it."""
    row = StarvationRow(
        id="c",
        program_id="p",
        engine_id="e0",
        status="preempted",
        level=3,
        service=40.0,
        rank_base=300.0,
        run_s=1.0,
        reset_s=NOW - 5.0,
        reset_run_s=0.0,
        program_created_s=NOW - 60,
        program_wait_s=0.5,
        program_run_s=2.0,
        now_s=NOW,
    )  # 60 s old, executed T_p + T_c = 3 s
    for slowdown, expect in ((20.0, True), (25.0, False)):
        live = LivePolicy.build("gittins", slowdown=slowdown)
        st = live.policy.starvation
        check = check_waiting(
            st, now=NOW, level=3, w_p=0.5, w_c=4.0, t_p=2.0, t_c=1.0, program_arrival_s=NOW - 60
        )
        change = live.promotion(row)
        assert check.aged is expect and (change is not None and change.aged) is expect
        if expect:
            assert change is not None and "tail guard: age 60.0s >= slowdown 20" in change.reason
        else:
            assert change is None and check.next_check_s == NOW - 60 + 75.0
    assert LivePolicy.build("gittins", slowdown=20.0).policy.starvation.min_aging_age_s == 20.0


def test_promoted_at_issue_when_the_program_waited_long() -> None:
    live = LivePolicy.build("atlas")  # beta 10
    call = _row(program_service=200.0, program_wait_s=30.0, program_run_s=2.0)
    d = live.decide(call, _engines(0))
    assert d is not None and d.level == 0 and d.restart and "promoted at issue" in d.reason
    calm = live.decide(replace(call, program_wait_s=1.0), _engines(0))
    assert calm is not None and calm.level > 0 and not calm.restart


def test_demotion_level_is_the_rank_of_the_new_value() -> None:
    live = LivePolicy.build("plas", quantum=32, levels=5)
    assert [live.level_after(rank_base=10.0, service=s, aged=False) for s in (0, 22, 54, 500)] == [
        0,
        1,
        2,
        4,
    ]
    assert live.level_after(rank_base=10.0, service=500, aged=True) == 0


def test_locality_and_guard_reasons() -> None:
    live = LivePolicy.build("atlas", short_prompt_tokens=100, guard_abs=3.0, guard_ratio=1.5)
    long = _row(prompt_ids_len=500)
    engine, pin, why = live.place(long, _engines(2, 1), 0)
    assert (engine, pin) == ("e1", "e1") and "pinned to least-loaded" in why
    engine, pin, why = live.place(replace(long, engine_affinity="e0"), _engines(3, 1), 0)
    assert (engine, pin) == ("e0", None) and "affinity" in why
    engine, _, why = live.place(replace(long, engine_affinity="e0"), _engines(9, 1), 0)
    assert engine == "e1" and "load skewed" in why
    engine, _, why = live.place(replace(long, engine_affinity="gone"), _engines(4, 5), 0)
    assert engine == "e0" and "pinned" in why  # a lost engine's pin is replaced
    engine, _, why = live.place(_row(prompt_ids_len=10), _engines(3, 1), 0)
    assert engine == "e1" and "short prompt" in why


def test_prompt_length_estimate() -> None:
    assert prompt_tokens(_row(prompt_ids_len=7)) == 7
    assert prompt_tokens(_row(prompt_ids_len=None, prompt_chars=10)) == math.ceil(10 / 4)


def test_policies_that_cannot_run_live_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot run live"):
        LivePolicy.build("srpt")
    assert LivePolicy.build("atlas", beta=None).policy.starvation.beta is None
    assert LivePolicy.build("atlas", quantum=16, levels=3).policy.mlfq.boundaries == (16.0, 32.0)


# --------------------------------------------------------------------------- engine runner


class _StubPool:
    """Every conditional transition succeeds (the engine owns its calls); nothing is stored."""

    async def fetchval(self, *args: object) -> object:
        return "ok"

    async def fetchrow(self, *args: object) -> None:
        return None

    async def fetch(self, *args: object) -> list[object]:
        if "SET status = 'running'" in str(args[0]):  # mark_running_many: all ours
            return [{"id": i} for i in args[1]]  # type: ignore[attr-defined]
        return []

    async def execute(self, *args: object) -> str:
        return ""

    async def executemany(self, *args: object) -> None:
        return None


class _StubNats:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes, **_: object) -> None:
        self.sent.append((subject, payload))


def _dispatch(
    call_id: str, level: int, *, tiebreak: float = 0.0, seq: int = 0, min_run_tokens: int = 0
) -> Dispatch:
    return Dispatch(
        call_id=call_id,
        program_id=f"p-{call_id}",
        thread_id="main",
        reply_to=f"_INBOX.{call_id}",
        level=level,
        priority=0.0,
        request=CallRequest(
            program_id=f"p-{call_id}",
            prompt_token_ids=[1, 2, 3],
            sampling=SamplingParams(max_tokens=100),
        ),
        accepted_at=datetime.now(UTC),
        tiebreak=tiebreak,
        control_seq=seq,
        min_run_tokens=min_run_tokens,
    )


@contextlib.asynccontextmanager
async def _unit_engine(
    token_latency_s: float, nc: Any = None, pool: Any = None
) -> AsyncIterator[Any]:
    """An EngineRunner over a one-slot simulated backend, with stub NATS and Postgres; its
    running calls are cancelled and the backend stopped afterwards."""
    import structlog

    from autellix.backends.sim import SimConfig, SimulatedBackend
    from autellix.services.engine.runner import EngineRunner
    from autellix.wire.protocol import Subjects

    backend = SimulatedBackend(SimConfig(max_batch=1, token_latency_s=token_latency_s))
    runner = EngineRunner(
        backend=backend,
        pool=pool if pool is not None else _StubPool(),
        nc=nc if nc is not None else _StubNats(),
        js=None,  # type: ignore[arg-type]
        subjects=Subjects("unit"),
        engine_id="e-unit",
        log=structlog.get_logger(),
    )
    try:
        yield runner
    finally:
        tasks = [c.task for c in list(runner.running) if c.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.stop()


async def test_engine_orders_by_rank_applies_each_control_once_and_preempts_by_plan() -> None:
    from autellix.wire.protocol import Control

    nc = _StubNats()
    async with _unit_engine(0.01, nc) as runner:
        assert runner.offer(_dispatch("a", 1))
        await asyncio.sleep(0.05)
        assert [c.call_id for c in runner.running] == ["a"]
        runner.offer(_dispatch("b", 3, tiebreak=5.0))
        runner.offer(_dispatch("c", 2, tiebreak=9.0))
        runner.offer(_dispatch("d", 2, tiebreak=1.0))  # same level as c, earlier program
        assert [c.call_id for c in runner.queues.all()] == ["d", "c", "b"]  # rank order
        runner.control(Control(action="set_level", call_id="b", level=2, seq=1))
        assert [c.call_id for c in runner.queues.all()] == ["d", "b", "c"]  # tiebreaks 1, 5, 9
        runner.control(Control(action="set_level", call_id="b", level=2, seq=2, tiebreak=0.5))
        assert [c.call_id for c in runner.queues.all()] == ["b", "d", "c"]
        for stale in (2, 1):  # a repeat and an older seq change nothing
            runner.control(Control(action="set_level", call_id="b", level=4, seq=stale))
            assert runner.calls["b"].level == 2
        # a level change that overtakes its Dispatch is applied when the Dispatch arrives...
        runner.control(Control(action="set_level", call_id="e", level=2, seq=3))
        runner.offer(_dispatch("e", 4, tiebreak=20.0, seq=2))
        assert runner.calls["e"].level == 2 and runner.calls["e"].control_seq == 3
        # ... unless the Dispatch already reflects it
        runner.control(Control(action="set_level", call_id="f", level=2, seq=3))
        runner.offer(_dispatch("f", 4, tiebreak=30.0, seq=3))
        assert runner.calls["f"].level == 4
        assert not any(c.stop_reason for c in runner.running)  # nobody waits above level 1
        # demote the running call below the waiting ones: plan_batch preempts it for b
        runner.control(Control(action="set_level", call_id="a", level=3, seq=1))
        await poll_until(
            lambda: [c.call_id for c in runner.running] == ["b"],
            within_s=1.0,
            every_s=0.01,
            fail=False,
        )
        assert [c.call_id for c in runner.running] == ["b"]
        a = runner.calls["a"]
        assert a.state == "waiting" and a.level == 3 and a.preemptions == 1 and a.tokens
        reports = [p for s, p in nc.sent if s == runner.subjects.reports]
        assert reports and b'"call_id":"a"' in reports[-1]  # its progress, reported at once


async def test_engine_never_preempts_a_run_dispatched_by_a_non_preemptive_policy() -> None:
    """plas-np's Dispatches carry NEVER_PREEMPT: a demoted running call keeps its slot while a
    better-ranked call waits at the full batch; the waiting one runs when the slot frees."""
    from autellix.wire.protocol import Control

    async with _unit_engine(0.002) as runner:
        assert runner.offer(_dispatch("a", 1, min_run_tokens=NEVER_PREEMPT))
        await asyncio.sleep(0.05)
        assert [c.call_id for c in runner.running] == ["a"]
        runner.offer(_dispatch("b", 0, min_run_tokens=NEVER_PREEMPT))
        runner.control(Control(action="set_level", call_id="a", level=5, seq=1))
        await asyncio.sleep(0.05)
        a = runner.calls["a"]
        assert [c.call_id for c in runner.running] == ["a"] and a.preemptions == 0
        assert a.run_tokens > 0 and a.stop_reason is None
        # a's 100 tokens at 2 ms each, then b
        await poll_until(
            lambda: [c.call_id for c in runner.running] == ["b"],
            within_s=3.0,
            every_s=0.01,
            fail=False,
        )
        assert [c.call_id for c in runner.running] == ["b"] and a.preemptions == 0


class _SlowSavePool(_StubPool):
    """Progress saves take 50 ms and are recorded (call_id, number of tokens written)."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, int]] = []

    async def executemany(self, *args: object) -> None:
        rows = args[1]
        await asyncio.sleep(0.05)
        self.saved.extend((r[0], len(r[2])) for r in rows)  # type: ignore[attr-defined]


async def test_engine_counts_as_saved_only_the_tokens_a_progress_save_wrote() -> None:
    """The call streams on while its progress is written; what it streamed meanwhile is not saved
    yet, so the next save (or a hand-back) must write it. Counting it as saved let a hand-back
    skip its final save and the next engine replay tokens the caller already had."""
    pool = _SlowSavePool()
    async with _unit_engine(0.002, pool=pool) as runner:
        assert runner.offer(_dispatch("a", 1))
        await poll_until(
            lambda: "a" in runner.calls and runner.calls["a"].sent >= 10,
            within_s=1.0,
            every_s=0.01,
            fail=False,
        )
        a = runner.calls["a"]
        await runner.save_progress_and_check()
        assert pool.saved and pool.saved[-1][0] == "a"
        written = pool.saved[-1][1]
        assert a.saved == written
        assert a.sent > written, "the call did not stream during the save (test is moot)"


async def test_backend_out_of_memory_is_a_typed_error_and_the_engine_keeps_serving() -> None:
    """vLLM failing one request for lack of memory: the caller gets a typed error saying so (code
    `engine_failed`, the protocol's code for an engine fault, message "... ran out of memory";
    Postgres keeps `out_of_memory`), and the engine goes on serving other calls."""
    from autellix.backends.vllm.errors import generate_error
    from autellix.wire.protocol import CALL_REPLY, CallError

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, as vLLM raises it
        pass

    oom = generate_error(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert oom.code == "out_of_memory" and "ran out of memory" in oom.message
    assert generate_error(RuntimeError("KV cache: out of memory")).code == "out_of_memory"
    assert generate_error(ValueError("bad top_p")).code == "validation_error"
    assert generate_error(RuntimeError("boom")).code == "engine_failed"

    nc = _StubNats()
    async with _unit_engine(0.002, nc) as runner:
        generate = runner.backend.generate

        def failing(req: Any) -> Any:
            if not req.request_id.startswith("oom:"):
                return generate(req)

            async def fail() -> AsyncIterator[Any]:
                raise oom
                yield  # an async generator, like the backend's

            return fail()

        runner.backend.generate = failing
        assert runner.offer(_dispatch("oom", 1))
        await poll_until(lambda: "oom" not in runner.calls, within_s=1.0, every_s=0.01, fail=False)
        errors = [CALL_REPLY.validate_json(p) for s, p in nc.sent if s == "ok"]
        assert len(errors) == 1 and isinstance(errors[0], CallError), errors
        assert errors[0].code == "engine_failed" and "ran out of memory" in errors[0].message
        assert runner.failed == 1 and not runner.closing
        assert runner.offer(_dispatch("after", 1))  # still taking and running calls
        await poll_until(
            lambda: any(c.call_id == "after" and c.tokens for c in runner.running),
            within_s=1.0,
            every_s=0.01,
            fail=False,
        )
        assert any(c.call_id == "after" and c.tokens for c in runner.running)
