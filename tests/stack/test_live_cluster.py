"""Live scheduling across replicas and engines, through real processes (frontend, two ATLAS
scheduler replicas, two simulated engines), real NATS and Postgres: data-locality routing with
affinity and the overload guard, two replicas folding one program's service at the same time
without losing an update, and an engine that stops heartbeating having its queued calls
re-dispatched to the other one.

Scheduler flags: long prompts are > 64 tokens (so tests can make them), guard 3 calls / 1.5x,
engines live for 1.5 s and lost after 2.5 s without a heartbeat (every 0.2 s).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams

ENGINES = ("loc-a", "loc-b")
SCHEDULERS = ("sched-a", "sched-b")
SCHED_ARGS = (
    *("--policy", "atlas", "--short-prompt-tokens", "64", "--guard-abs", "3"),
    *("--guard-ratio", "1.5", "--engine-live", "1.5", "--engine-stale", "2.5"),
    *("--maintenance-interval", "0.5", "--fold-interval", "0.02"),
)


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    for name in SCHEDULERS:
        s.start(name, "scheduler", "--replica", name, *SCHED_ARGS)
    for e in ENGINES:
        s.start_engine(
            e,
            *("--max-batch", "2", "--token-latency", "0.01", "--heartbeat-interval", "0.2"),
            *("--report-interval", "0.03"),
        )
    async with s.running():
        await asyncio.sleep(0.5)  # both replicas have heard both engines
        yield s


def _req(program: str, thread: str, tokens: int, prompt_tokens: int) -> CallRequest:
    return CallRequest(
        program_id=program,
        thread_id=thread,
        prompt_token_ids=[(7 * i + len(thread)) % 1000 + 1 for i in range(prompt_tokens)],
        sampling=SamplingParams(max_tokens=tokens),
    )


async def _done(calls: list[WireCall], wait_s: float = 90.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), wait_s)
    for c in calls:
        assert isinstance(c.final, CallFinal), c.terminal


async def _dispatches(db: str, program: str) -> list[Any]:
    return await db_fetch(
        db,
        """SELECT e.call_id, e.engine_id, e.reason, e.actor FROM call_events e
           JOIN calls c ON c.id = e.call_id
           WHERE c.program_id = $1 AND e.kind = 'dispatch' ORDER BY e.at, e.id""",
        program,
    )


async def test_locality_pins_long_prompts_and_the_guard_spreads_overload(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    first = await wire.run(_req("loc-pinned", "t0", 5, prompt_tokens=100), wait_s=30)
    (pin_row,) = await db_fetch(db, "SELECT engine_affinity FROM programs WHERE id = 'loc-pinned'")
    pinned = pin_row["engine_affinity"]
    assert pinned in ENGINES and first.final.engine.engine_id == pinned
    (d0,) = await _dispatches(db, "loc-pinned")
    assert "pinned to least-loaded" in d0["reason"]
    other = next(e for e in ENGINES if e != pinned)

    # a burst of long calls of the pinned program: affinity until the load is skewed. Each call
    # runs 1.5 s (150 tokens at 0.01 s), so the pinned engine (2 slots) serves 1.3 calls/s and
    # its queue builds past the guard even when a loaded CI box dispatches the burst slowly
    # (40-token calls once drained as fast as they came: loads [3, 2], nothing moved)
    burst = [
        await wire.submit(_req("loc-pinned", f"t{i}", 150, prompt_tokens=100)) for i in range(1, 15)
    ]
    shorts = [await wire.submit(_req("loc-short", f"s{i}", 5, prompt_tokens=20)) for i in range(4)]
    await _done(burst + shorts)
    rows = (await _dispatches(db, "loc-pinned"))[1:]
    assert len(rows) == 14
    on_pin = [r for r in rows if r["engine_id"] == pinned]
    off_pin = [r for r in rows if r["engine_id"] == other]
    assert on_pin and off_pin, "the guard never moved a call (or affinity was never honoured)"
    assert all("affinity to pinned" in r["reason"] for r in on_pin), on_pin
    assert all("load skewed" in r["reason"] for r in off_pin), off_pin
    (row,) = await db_fetch(db, "SELECT engine_affinity FROM programs WHERE id = 'loc-pinned'")
    assert row["engine_affinity"] == pinned  # the guard does not move the pin
    for r in await _dispatches(db, "loc-short"):
        assert "short prompt" in r["reason"]

    # load balanced again: the next long call goes back to the pinned engine (prefix cached)
    again = await wire.run(_req("loc-pinned", "t99", 5, prompt_tokens=100), wait_s=30)
    assert again.final.engine.engine_id == pinned
    assert again.final.usage.cached_tokens > 0


async def test_two_replicas_fold_one_program_without_lost_updates(
    wire: WireRecorder, module_settings: Settings
) -> None:
    """Ten parallel threads of one program on two engines: their progress reports reach both
    replicas (queue group), which fold and demote concurrently. At every moment the program's
    attained service equals the sum of its calls' (one consistent snapshot); at the end it is
    exactly the tokens generated, and each thread has its own.

    Each call makes 120 tokens and crosses exactly one level bound (64, or 128 if it started
    after a sibling finished): it is demoted once if a replica folds the crossing report while
    the call still runs. A call that finishes first is legitimately not demoted (nothing left
    to re-rank), which a loaded machine makes possible, so the crossing sits at about half of
    the call (0.5 s of slack at 0.01 s/token) and at most two calls may escape it; no call may
    ever be demoted twice (two replicas racing on one crossing)."""
    db = module_settings.database_url
    tokens = 120
    calls = [
        await wire.submit(_req("race-prog", f"r{i}", tokens, prompt_tokens=8)) for i in range(10)
    ]
    samples = 0
    while not all(c.done.is_set() for c in calls):
        rows = await db_fetch(
            db,
            """SELECT p.attained, (SELECT COALESCE(sum(c.service), 0) FROM calls c
                                   WHERE c.program_id = p.id) AS total
               FROM programs p WHERE p.id = 'race-prog'""",
        )
        if rows:  # the frontend may not have registered the program yet
            ((attained, total),) = rows
            assert attained == pytest.approx(total), (attained, total)
            samples += 1
        await asyncio.sleep(0.03)
    await _done(calls)
    assert samples >= 5
    (p,) = await db_fetch(db, "SELECT * FROM programs WHERE id = 'race-prog'")
    assert p["attained"] == pytest.approx(10 * tokens)
    assert p["total_service"] == pytest.approx(10 * tokens)
    assert p["service"] == pytest.approx(tokens)  # ATLAS: critical path of parallel roots
    threads = await db_fetch(db, "SELECT service FROM threads WHERE program_id = 'race-prog'")
    assert [t["service"] for t in threads] == [pytest.approx(tokens)] * 10
    demotes = await db_fetch(
        db,
        """SELECT e.call_id, e.actor, e.value FROM call_events e JOIN calls c ON c.id = e.call_id
           WHERE c.program_id = 'race-prog' AND e.kind = 'demote'""",
    )
    per_call = Counter(d["call_id"] for d in demotes)
    assert all(n == 1 for n in per_call.values()), per_call  # never demoted twice
    assert len(per_call) >= 8, f"only {len(per_call)} of 10 calls demoted"
    assert all(d["value"] >= 64 for d in demotes)
    assert {d["actor"] for d in demotes} == set(SCHEDULERS), "one replica did all the folding"


async def test_engine_losing_its_heartbeat_has_its_queued_calls_redispatched(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    calls = [await wire.submit(_req(f"hb-{i}", "main", 60, prompt_tokens=8)) for i in range(16)]
    deadline = time.monotonic() + 20
    while True:  # wait until loc-b holds queued (not yet running) calls
        rows = await db_fetch(
            db,
            "SELECT id FROM calls WHERE engine_id = 'loc-b' AND status = 'dispatched'"
            " AND program_id LIKE 'hb-%'",
        )
        if len(rows) >= 2:
            break
        assert time.monotonic() < deadline, "loc-b never had queued calls"
        await asyncio.sleep(0.02)
    stack.group.signal("loc-b", signal.SIGSTOP)
    try:
        await _done(calls, wait_s=90)
    finally:
        stack.group.signal("loc-b", signal.SIGCONT)
    moved = [r["id"] for r in rows]
    for c in calls:
        c.streamed_tokens()  # no gap, no replay that differs
        assert len(c.final.token_ids or []) == 60
    finals = {c.call_id: c.final for c in calls}
    for call_id in moved:
        assert finals[call_id].engine.engine_id == "loc-a"
        events = await db_fetch(
            db, "SELECT * FROM call_events WHERE call_id = $1 ORDER BY at, id", call_id
        )
        kinds = [e["kind"] for e in events]
        assert kinds.count("dispatch") == 2 and "requeue" in kinds, kinds
        requeue = next(e for e in events if e["kind"] == "requeue")
        assert requeue["engine_id"] == "loc-b" and "heartbeat stale" in requeue["reason"]
    # loc-b is back: it owns nothing any more, nobody gets a second answer
    await asyncio.sleep(1.5)
    assert Counter(len(c.terminal) for c in calls) == {1: len(calls)}
