"""Scheduler replicas SIGKILLed mid-run and restarted: no accepted call is lost or answered twice.

Two replicas share the durable consumer; each is killed (SIGKILL, no drain) while calls stream
in, then restarted. `--ack-wait 2` makes JetStream redeliver the killed replica's unacked
messages quickly. Checked on the wire (every inbox gets exactly one final) and in Postgres (every
call finished once, dispatched once).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallAccepted, CallFinal, CallRequest, SamplingParams

SCHED_ARGS = ("--ack-wait", "2", "--concurrency", "8", "--reconcile-after", "5")


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    s.start("sched-a", "scheduler", "--replica", "sched-a", *SCHED_ARGS)
    s.start("sched-b", "scheduler", "--replica", "sched-b", *SCHED_ARGS)
    for e in ("kill-e1", "kill-e2"):
        s.start_engine(e, "--max-batch", "16", "--token-latency", "0.004")
    async with s.running():
        yield s


async def _program(wire: WireRecorder, pid: str, n: int, rng: random.Random) -> list[WireCall]:
    calls = []
    for i in range(n):
        req = CallRequest(
            program_id=pid,
            prompt=f"{pid} turn {i}",
            sampling=SamplingParams(max_tokens=rng.randint(1, 20)),
        )
        calls.append(await wire.run(req, wait_s=120))
        await asyncio.sleep(rng.random() * 0.05)
    return calls


def _kill(stack: Stack, name: str) -> None:
    stack.group.signal(name, signal.SIGKILL)


async def _restart(stack: Stack, name: str) -> None:
    await asyncio.to_thread(stack.group[name].exited.wait, 10)
    stack.group.start(stack.group[name].spec)  # a new incarnation, with fresh output lines
    await stack.group.wait_ready_async(name, timeout=90)


async def _check(calls: list[WireCall], database_url: str) -> None:
    await asyncio.sleep(2.0)  # late duplicates would show up now
    for c in calls:
        assert isinstance(c.messages[0], CallAccepted), c.messages[:2]
        assert len(c.terminal) == 1, f"{c.call_id} got {len(c.terminal)} answers"
        final = c.terminal[0]
        assert isinstance(final, CallFinal), final
        assert len(final.token_ids or []) == c.request.sampling.max_tokens
        assert c.streamed_tokens() == final.token_ids
    rows = await db_fetch(
        database_url,
        """SELECT c.id, c.status,
                  (SELECT count(*) FROM call_events e
                   WHERE e.call_id = c.id AND e.kind = 'finish') AS finishes,
                  (SELECT count(*) FROM call_events e
                   WHERE e.call_id = c.id AND e.kind = 'dispatch') AS dispatches
           FROM calls c WHERE c.id = ANY($1::text[])""",
        [c.call_id for c in calls],
    )
    assert len(rows) == len(calls)
    for r in rows:
        assert r["status"] == "finished" and r["finishes"] == 1 and r["dispatches"] == 1, dict(r)


async def test_sigkill_schedulers_mid_run(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    rng = random.Random(11)
    run = asyncio.gather(
        *(_program(wire, f"kill-p{i}", 12, random.Random(rng.random())) for i in range(24))
    )
    await asyncio.sleep(1.0)
    _kill(stack, "sched-a")
    await asyncio.sleep(0.5)
    await _restart(stack, "sched-a")
    _kill(stack, "sched-b")
    await asyncio.sleep(0.3)
    _kill(stack, "sched-a")  # a moment with no scheduler at all
    await asyncio.sleep(0.5)
    await asyncio.gather(_restart(stack, "sched-a"), _restart(stack, "sched-b"))
    results = await asyncio.wait_for(run, timeout=240)
    calls = [c for per in results for c in per]
    assert len(calls) == 24 * 12
    await _check(calls, module_settings.database_url)
    # both replicas dispatched after their restart
    for name in ("sched-a", "sched-b"):
        assert '"event": "scheduler ready"' in stack.group[name].tail(10_000)


async def test_calls_accepted_while_no_scheduler_runs_are_served_after_restart(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    for name in ("sched-a", "sched-b"):
        _kill(stack, name)
    await asyncio.gather(
        *(asyncio.to_thread(stack.group[n].exited.wait, 10) for n in ("sched-a", "sched-b"))
    )
    calls = [
        await wire.submit(
            CallRequest(
                program_id="kill-offline",
                thread_id=f"t{i}",
                prompt="waiting for a scheduler",
                sampling=SamplingParams(max_tokens=5),
            )
        )
        for i in range(20)
    ]
    await asyncio.sleep(1.0)
    assert all(isinstance(c.messages[0], CallAccepted) for c in calls)  # accepted, not served
    assert not any(c.done.is_set() for c in calls)
    stack.group.start(stack.group["sched-b"].spec)
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 90)
    await _check(calls, module_settings.database_url)
    await _restart(stack, "sched-a")


@pytest.mark.parametrize("point", ["before_transition", "after_transition", "after_publish"])
async def test_crash_at_each_point_of_a_dispatch(
    stack: Stack, wire: WireRecorder, module_settings: Settings, point: str
) -> None:
    """A replica that SIGKILLs itself at an exact step of its 3rd dispatch (fault injection);
    the other replica picks up the redelivered message; every call is answered once."""
    for name in ("sched-a", "sched-b"):
        if stack.group[name].running:
            stack.group.stop(name)
    name = f"sched-crash-{point}"
    stack.start(
        name,
        "scheduler",
        "--replica",
        name,
        *SCHED_ARGS,
        env={"AUTELLIX_TEST_CRASH_AT": f"{point}:3"},
    )
    await stack.wait_ready(name)
    calls = [
        await wire.submit(
            CallRequest(
                program_id=f"crash-{point}",
                thread_id=f"t{i}",
                prompt="crash me",
                sampling=SamplingParams(max_tokens=4),
            )
        )
        for i in range(6)
    ]
    await asyncio.to_thread(stack.group[name].exited.wait, 30)
    assert stack.group[name].returncode == -signal.SIGKILL
    await _restart(stack, "sched-b")
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 60)
    await _check(calls, module_settings.database_url)
    totals = await _stop_and_totals(stack, "sched-b")
    if point == "after_transition":  # committed but never published: the survivor publishes it
        assert totals["republished"] >= 1, totals


async def _stop_and_totals(stack: Stack, name: str) -> dict:
    await asyncio.to_thread(stack.group.stop, name)
    line, _ = stack.group[name].find_line('"event": "scheduler totals"')
    assert line is not None, stack.group[name].tail(20)
    return json.loads(line)


async def test_frontend_killed_between_insert_and_publish(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    """The call row is committed but neither CallAccepted nor the ScheduleCall went out: the
    schedulers' reconciler republishes it, the engine answers the stored reply subject, and a
    client retry with the same client_call_id gets the stored result (no second run)."""
    if not stack.group["sched-a"].running:
        await _restart(stack, "sched-a")
    await asyncio.to_thread(stack.group.stop, "frontend")
    stack.start("frontend-crash", "frontend", env={"AUTELLIX_TEST_CRASH_AT": "after_insert:1"})
    await stack.wait_ready("frontend-crash")
    req = CallRequest(
        program_id="fe-crash",
        client_call_id="fe-crash-1",
        prompt="will the frontend survive?",
        sampling=SamplingParams(max_tokens=6),
    )
    lost = await wire.submit(req)
    await asyncio.to_thread(stack.group["frontend-crash"].exited.wait, 30)
    assert stack.group["frontend-crash"].returncode == -signal.SIGKILL
    assert lost.messages == []  # not even accepted
    await asyncio.wait_for(lost.done.wait(), 60)  # reconcile-after is 5 s in this module
    (final,) = lost.terminal
    assert isinstance(final, CallFinal) and len(final.token_ids or []) == 6

    stack.group.start(stack.group["frontend"].spec)
    await stack.wait_ready("frontend")
    again = await wire.run(req)
    acc = again.messages[0]
    assert isinstance(acc, CallAccepted) and acc.duplicate and acc.call_id == final.call_id
    assert again.final.token_ids == final.token_ids
    rows = await db_fetch(
        module_settings.database_url,
        "SELECT kind FROM call_events WHERE call_id = $1 ORDER BY at",
        final.call_id,
    )
    kinds = [r["kind"] for r in rows]
    assert kinds.count("republish") >= 1 and kinds.count("finish") == 1, kinds
