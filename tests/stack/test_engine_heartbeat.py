"""An engine whose heartbeat stops (SIGSTOP: alive but frozen) gets no new calls, and its
in-flight calls are re-dispatched to another engine, resume from their saved progress, and are
answered exactly once, even after the frozen engine wakes up (SIGCONT) and tries to finish them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallAccepted, CallFinal, CallRequest, SamplingParams, TokenDelta

ENGINE_ARGS = (
    "--max-batch",
    "8",
    "--token-latency",
    "0.02",
    "--heartbeat-interval",
    "0.25",
    "--progress-interval",
    "0.25",
)


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    s.start(
        "scheduler",
        "scheduler",
        "--engine-live",
        "1.0",
        "--engine-stale",
        "2.0",
        "--maintenance-interval",
        "0.3",
    )
    for e in ("hb-a", "hb-b"):
        s.start_engine(e, *ENGINE_ARGS)
    async with s.running():
        try:
            yield s
        finally:
            for name in ("hb-a", "hb-b"):  # never leave a stopped process behind
                if s.group[name].running:
                    s.group.signal(name, signal.SIGCONT)


def _req(program: str, thread: str, max_tokens: int) -> CallRequest:
    return CallRequest(
        program_id=program,
        thread_id=thread,
        prompt=f"{program}/{thread}",
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _engine_of(database_url: str, call_ids: list[str]) -> dict[str, str | None]:
    rows = await db_fetch(
        database_url,
        "SELECT id, engine_id FROM calls WHERE id = ANY($1::text[])",
        call_ids,
    )
    return {r["id"]: r["engine_id"] for r in rows}


async def test_frozen_engine_calls_move_to_the_other_engine(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    # 12 long calls (150 tokens at 20 ms per step = 3 s each) spread over both engines
    first = [await wire.submit(_req("hb-prog", f"t{i}", 150)) for i in range(12)]
    deadline = time.monotonic() + 20
    while True:
        await asyncio.sleep(0.2)
        ids = [c.call_id for c in first if c.call_id]
        owners = await _engine_of(db, ids) if len(ids) == len(first) else {}
        on_a = [cid for cid, e in owners.items() if e == "hb-a"]
        if on_a and any(e == "hb-b" for e in owners.values()):
            break
        assert time.monotonic() < deadline, owners
    await asyncio.sleep(0.8)  # let them stream (and save) some tokens on hb-a
    stack.group.signal("hb-a", signal.SIGSTOP, expected=False)
    frozen_at = time.monotonic()

    # after the scheduler stops trusting hb-a (1 s), new calls go to hb-b only
    await asyncio.sleep(1.5)
    later = [await wire.submit(_req("hb-prog2", f"n{i}", 5)) for i in range(6)]
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in later)), 60)
    assert all(isinstance(c.terminal[0], CallFinal) for c in later)
    assert {c.final.engine.engine_id for c in later} == {"hb-b"}

    # hb-a's calls are re-dispatched to hb-b and finish there
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in first)), 90)
    moved = [c for c in first if c.call_id in on_a]
    for c in moved:
        assert c.final.engine.engine_id == "hb-b"
        # resumed from the progress hb-a saved, not restarted: only hb-a streamed offset 0
        starts = [m for m in c.messages if isinstance(m, TokenDelta) and m.offset == 0]
        assert len(starts) == 1, f"{c.call_id} restarted from scratch"
    assert time.monotonic() - frozen_at < 60

    # wake hb-a up: it must not answer anything a second time
    stack.group.signal("hb-a", signal.SIGCONT, expected=False)
    await asyncio.sleep(3.0)
    for c in [*first, *later]:
        _assert_answered_once(c)

    rows = await db_fetch(
        db,
        """SELECT c.id, c.status, c.attempts, c.engine_id, c.completion_tokens,
                  (SELECT count(*) FROM call_events e WHERE e.call_id = c.id AND e.kind = 'requeue'
                     AND e.reason LIKE 'engine lost%') AS requeues,
                  (SELECT count(*) FROM call_events e
                   WHERE e.call_id = c.id AND e.kind = 'finish') AS finishes
           FROM calls c WHERE c.id = ANY($1::text[])""",
        on_a,
    )
    for r in rows:
        assert r["status"] == "finished" and r["engine_id"] == "hb-b", dict(r)
        assert r["attempts"] == 2 and r["requeues"] == 1 and r["finishes"] == 1, dict(r)
        assert r["completion_tokens"] == 150
    # the reaper marked hb-a down; its heartbeat after SIGCONT brings it back up
    deadline = time.monotonic() + 10
    while True:
        (eng,) = await db_fetch(db, "SELECT status FROM engines WHERE id = 'hb-a'")
        if eng["status"] == "up":
            break
        assert time.monotonic() < deadline, "hb-a did not come back"
        await asyncio.sleep(0.3)
    log_a = stack.logs("hb-a")
    assert '"event": "call dropped"' in log_a  # it gave up the calls it no longer owns
    assert "engines lost (heartbeat stale)" in stack.logs("scheduler")


def _assert_answered_once(c: WireCall) -> None:
    assert isinstance(c.messages[0], CallAccepted)
    assert len(c.terminal) == 1, f"{c.call_id}: {len(c.terminal)} answers"
    final = c.terminal[0]
    assert isinstance(final, CallFinal)
    want = c.request.sampling.max_tokens
    assert len(final.token_ids or []) == want and final.usage.completion_tokens == want
    # the stream continued across engines without gaps, and replays agreed token for token
    assert c.streamed_tokens() == final.token_ids
