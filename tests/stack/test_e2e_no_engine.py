"""No live engine: calls wait (accepted, queued), then fail with `no_engine` after the
configured timeout, exactly once; calls waiting when an engine appears are served by it."""

from __future__ import annotations

import asyncio
import time

from svc_stack import Stack, WireRecorder, db_fetch, stack_fixture

from autellix.runtime.settings import Settings
from autellix.wire.protocol import (
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
)

stack = stack_fixture(scheduler=("--no-engine-timeout", "3", "--retry-delay", "0.2"))


def _req(i: int) -> CallRequest:
    return CallRequest(
        program_id="noe-prog", thread_id=f"t{i}", prompt="anyone?", sampling=SamplingParams()
    )


async def test_calls_fail_with_no_engine_after_the_timeout(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    t0 = time.monotonic()
    calls = [await wire.submit(_req(i)) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 30)
    assert time.monotonic() - t0 >= 2.5  # it waited for an engine first
    await asyncio.sleep(1.5)
    for c in calls:
        assert isinstance(c.messages[0], CallAccepted)
        (err,) = c.terminal
        assert isinstance(err, CallError) and err.code == ErrorCode.no_engine and err.retryable
        assert err.call_id == c.call_id
    rows = await db_fetch(
        module_settings.database_url,
        "SELECT status, error_code FROM calls WHERE id = ANY($1::text[])",
        [c.call_id for c in calls],
    )
    assert {(r["status"], r["error_code"]) for r in rows} == {("failed", "no_engine")}
    assert "call failed: no engine" in stack.logs("scheduler")


async def test_waiting_calls_are_served_when_an_engine_appears(
    stack: Stack, wire: WireRecorder
) -> None:
    await asyncio.to_thread(stack.group.stop, "scheduler")
    stack.start("scheduler-patient", "scheduler", "--no-engine-timeout", "120")
    await stack.wait_ready("scheduler-patient")
    calls = [await wire.submit(_req(10 + i)) for i in range(3)]
    await asyncio.sleep(0.5)
    stack.start_engine("noe-e1", "--max-batch", "4")
    await stack.wait_ready("noe-e1")
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 30)
    for c in calls:
        (final,) = c.terminal
        assert isinstance(final, CallFinal) and final.engine.engine_id == "noe-e1"
