"""The engine service on its own, with the test acting as the scheduler: level-ordered admission
and local preemption with an uninterrupted stream, Control messages, drain on SIGTERM with
resume elsewhere. Plus the simulated backend's contract (deterministic, resumable, batched)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
import pytest_asyncio
from builders import accept, dispatch
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.backends.base import BackendError, GenerationRequest
from autellix.backends.sim import SimConfig, SimulatedBackend
from autellix.runtime.settings import Settings
from autellix.store.accept import new_call_id
from autellix.store.db import create_pool
from autellix.transport import bus
from autellix.wire.protocol import (
    CallError,
    CallFinal,
    CallRequest,
    Control,
    Dispatch,
    ErrorCode,
    SamplingParams,
    TokenDelta,
    encode,
)

ENGINE = "pre-e1"

# --------------------------------------------------------------------------- sim backend


async def _run(backend: SimulatedBackend, req: GenerationRequest) -> tuple[list[int], str, int]:
    out, reason, cached = [], "", 0
    async for chunk in backend.generate(req):
        out += chunk.token_ids
        if chunk.cached_prompt_tokens is not None:
            cached = chunk.cached_prompt_tokens
        reason = chunk.finish_reason or reason
    return out, reason, cached


async def test_sim_tokens_are_deterministic_and_resumable() -> None:
    b = SimulatedBackend(SimConfig(max_batch=4))
    prompt = list(range(40))
    full, reason, _ = await _run(b, GenerationRequest("a", prompt, 30))
    assert reason == "length" and len(full) == 30
    head, _, _ = await _run(b, GenerationRequest("b", prompt, 11))
    tail, _, cached = await _run(b, GenerationRequest("c", prompt + head, 19))
    assert head + tail == full  # a continuation produces what the uninterrupted call would
    assert cached == 48  # prompt (40) + head (11) = 51 tokens: 3 full cached blocks of 16
    other, _, _ = await _run(b, GenerationRequest("d", prompt, 30, seed=5))
    assert other != full
    stop_at = full[7]
    stopped, reason, _ = await _run(b, GenerationRequest("e", prompt, 30, stop_token_ids=[stop_at]))
    assert reason == "stop" and stopped == full[: full.index(stop_at) + 1]
    with pytest.raises(BackendError) as err:
        await _run(b, GenerationRequest("f", [1] * 200_000, 10))
    assert err.value.code == "prompt_too_long"
    await b.stop()


async def test_sim_batches_steps() -> None:
    """8 calls of 10 tokens on a batch of 4 at 10 ms per step: two rounds of 10 steps."""
    b = SimulatedBackend(SimConfig(max_batch=4, token_latency_s=0.01))
    t = time.monotonic()
    await asyncio.gather(*(_run(b, GenerationRequest(str(i), [i], 10)) for i in range(8)))
    elapsed = time.monotonic() - t
    assert b.steps == 20
    assert 0.19 < elapsed < 1.0
    await b.stop()


# --------------------------------------------------------------------------- engine process


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start_engine(
        ENGINE,
        "--max-batch",
        "1",
        "--token-latency",
        "0.01",
        "--drain-timeout",
        "0.5",
        "--orphan-sweep",
        "2",
    )
    async with s.running():
        yield s


class FakeScheduler:
    """Registers calls in Postgres and publishes Dispatches, as a scheduler would."""

    def __init__(self, stack: Stack, wire: WireRecorder, pool: Any, js: Any) -> None:
        self.stack, self.wire, self.pool, self.js = stack, wire, pool, js
        self.n = 0

    async def dispatch(
        self, max_tokens: int, level: int, engine: str = ENGINE, publish: bool = True
    ) -> WireCall:
        self.n += 1
        req = CallRequest(
            program_id="engine-prog",
            thread_id=f"t{self.n}",
            prompt_token_ids=[self.n, 2, 3, 4],
            sampling=SamplingParams(max_tokens=max_tokens),
        )
        call, reply_to = self.wire.expect(req)
        call_id = new_call_id()
        res = await accept(
            self.pool,
            call_id=call_id,
            program_id=req.program_id,
            thread_id=req.thread_id,
            reply_to=reply_to,
            request_json=req.model_dump_json(),
        )
        assert not res.duplicate
        accepted_at = await dispatch(
            self.pool, call_id, engine_id=engine, level=level, reason="test dispatch"
        )
        d = Dispatch(
            call_id=call_id,
            program_id=req.program_id,
            thread_id=req.thread_id,
            reply_to=reply_to,
            level=level,
            priority=0.0,
            request=req,
            accepted_at=accepted_at,
        )
        subjects = self.stack.subjects
        if publish:
            await bus.publish_js(
                self.js,
                subjects.dispatch(engine, level),
                encode(d),
                bus.dispatch_msg_id(call_id, 0),
            )
        call.fake_id = call_id  # type: ignore[attr-defined]
        return call


@pytest_asyncio.fixture(scope="module")
async def sched(stack: Stack) -> AsyncIterator[FakeScheduler]:
    nc = await nats.connect(stack.settings.nats_url)
    wire = await WireRecorder(nc, stack.subjects).start()
    assert stack.settings.database_url
    pool = await create_pool(stack.settings.database_url)
    yield FakeScheduler(stack, wire, pool, nc.jetstream())
    await wire.stop()
    await pool.close()
    await nc.close()


def _deltas(call: WireCall) -> list[TokenDelta]:
    return [m for m in call.messages if isinstance(m, TokenDelta)]


async def _first_delta(call: WireCall, wait_s: float = 20) -> None:
    deadline = time.monotonic() + wait_s
    while not _deltas(call):
        assert time.monotonic() < deadline, "no tokens streamed"
        await asyncio.sleep(0.02)


async def test_higher_level_call_preempts_at_full_batch(
    sched: FakeScheduler, module_settings: Settings
) -> None:
    low = await sched.dispatch(max_tokens=80, level=3)
    await _first_delta(low)
    high = await sched.dispatch(max_tokens=5, level=0)
    await asyncio.wait_for(asyncio.gather(low.done.wait(), high.done.wait()), 60)
    assert high.finished is not None and low.finished is not None
    assert high.finished < low.finished  # it did not wait for the 80-token call
    lf, hf = low.terminal[0], high.terminal[0]
    assert isinstance(lf, CallFinal) and isinstance(hf, CallFinal)
    assert lf.preemptions == 1 and hf.preemptions == 0
    # the victim's stream is uninterrupted: contiguous offsets, no token sent twice
    offsets = [d.offset for d in _deltas(low)]
    sizes = [len(d.token_ids) for d in _deltas(low)]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert low.streamed_tokens() == lf.token_ids and len(lf.token_ids or []) == 80
    # ... and it is exactly what an uninterrupted run gives (resume by continuation)
    b = SimulatedBackend()
    expect, _, _ = await _run(b, GenerationRequest("x", list(low.request.prompt_token_ids), 80))
    await b.stop()
    assert lf.token_ids == expect
    rows = await db_fetch(
        module_settings.database_url,
        """SELECT kind, reason FROM call_events WHERE call_id = $1 ORDER BY at""",
        low.fake_id,  # type: ignore[attr-defined]
    )
    assert [r["kind"] for r in rows] == ["dispatch", "preempt", "finish"]
    assert "level 0 waiting" in rows[1]["reason"]


async def test_control_cancel_and_preempt(sched: FakeScheduler, stack: Stack) -> None:
    nc = sched.wire.nc
    control = stack.subjects.control(ENGINE)
    running = await sched.dispatch(max_tokens=400, level=0)
    await _first_delta(running)
    waiting = await sched.dispatch(max_tokens=5, level=0)  # same level: waits, no preemption
    await asyncio.sleep(0.3)
    assert not waiting.done.is_set()
    await nc.publish(control, encode(Control(action="cancel", call_id=waiting.fake_id, seq=1)))  # type: ignore[attr-defined]
    await asyncio.wait_for(waiting.done.wait(), 10)
    (err,) = waiting.terminal
    assert isinstance(err, CallError) and err.code == ErrorCode.cancelled
    # a scheduler-ordered preemption to level 4: nothing else waits, so it resumes at once
    await nc.publish(
        control,
        encode(Control(action="preempt", call_id=running.fake_id, level=4, reason="test", seq=1)),  # type: ignore[attr-defined]
    )
    await asyncio.sleep(0.3)
    await nc.publish(control, encode(Control(action="cancel", call_id=running.fake_id, seq=2)))  # type: ignore[attr-defined]
    await asyncio.wait_for(running.done.wait(), 10)
    (err,) = running.terminal
    assert isinstance(err, CallError) and err.code == ErrorCode.cancelled
    assert 0 < len(running.streamed_tokens()) < 400
    assert '"event": "control"' in stack.logs(ENGINE)


async def test_orphaned_call_is_handed_back(
    sched: FakeScheduler, module_settings: Settings
) -> None:
    """Dispatched to this engine in Postgres, but the Dispatch message never arrives."""
    lost = await sched.dispatch(max_tokens=3, level=0, publish=False)
    deadline = time.monotonic() + 30
    while True:
        rows = await db_fetch(
            module_settings.database_url,
            "SELECT c.status, e.reason FROM calls c JOIN call_events e ON e.call_id = c.id"
            " WHERE c.id = $1 AND e.kind = 'requeue'",
            lost.fake_id,  # type: ignore[attr-defined]
        )
        if rows:
            break
        assert time.monotonic() < deadline, "orphan not handed back"
        await asyncio.sleep(0.3)
    assert rows[0]["status"] == "queued" and rows[0]["reason"] == "orphaned on a live engine"


async def test_drain_hands_running_calls_back_with_progress(
    sched: FakeScheduler, stack: Stack, module_settings: Settings
) -> None:
    long = await sched.dispatch(max_tokens=300, level=0)
    await _first_delta(long)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(stack.group.stop, ENGINE)  # SIGTERM: drain 0.5 s, then hand back
    assert stack.group[ENGINE].returncode == 0
    db = module_settings.database_url
    (row,) = await db_fetch(
        db,
        "SELECT status, engine_id, attempts, output_token_ids FROM calls WHERE id = $1",
        long.fake_id,  # type: ignore[attr-defined]
    )
    assert row["status"] == "queued" and row["engine_id"] is None
    saved = list(row["output_token_ids"])
    assert 0 < len(saved) < 300 and saved == long.streamed_tokens()[: len(saved)]
    (eng,) = await db_fetch(db, "SELECT status FROM engines WHERE id = $1", ENGINE)
    assert eng["status"] == "down"
    # a scheduler and a fresh engine pick it up from the ScheduleCall the engine published
    stack.start("scheduler", "scheduler")
    stack.start_engine("pre-e2", "--max-batch", "2")
    await stack.wait_ready("scheduler", "pre-e2")
    await asyncio.wait_for(long.done.wait(), 60)
    (final,) = long.terminal
    assert isinstance(final, CallFinal) and final.engine.engine_id == "pre-e2"
    assert long.streamed_tokens() == final.token_ids and len(final.token_ids or []) == 300
    resumed_at = [d.offset for d in _deltas(long) if d.offset > 0 and d.offset >= len(saved)]
    assert resumed_at and resumed_at[0] == len(saved)  # continued where progress was saved
    assert stack.group.running() == ["scheduler", "pre-e2"]
