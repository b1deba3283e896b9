"""Call rows are locked in one order (call id) by every statement that locks several: so an
engine's progress save and a scheduler's fold (or level change) of the same calls can never
deadlock, whatever order each was handed the calls in.

The race is made deterministic on real Postgres, with a third connection as a gate: it holds
row `a`; the scheduler's statement (rows `a, b` in id order) queues on `a` first; then the
engine's save of `[b, a]` starts and queues on `a` too. Released, the gate's row goes to the
first waiter, the scheduler, which then needs `b`. A save that locks in the order it was given
(`b` first, as before the lock-order fix) holds `b` by then: Postgres detects the cycle and
aborts one side with DeadlockDetectedError. A save that locks in id order holds nothing while it
waits for `a`, so both commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import pytest

from autellix.store.accept import accept_call, new_call_id
from autellix.store.db import create_pool
from autellix.store.dispatch import DispatchItem, mark_dispatched_many
from autellix.store.levels import LevelChange, change_levels
from autellix.store.progress import Progress, fold_progress
from autellix.store.running import save_progress

PROGRAM = "lock-order-prog"
ENGINE = "lock-order-engine"

Save = Callable[
    [asyncpg.Connection, str, Sequence[tuple[str, int, list[int], str | None]]], Awaitable[None]
]
Scheduler = Callable[[asyncpg.Connection, list[str]], Awaitable[object]]


async def _running_calls(pool: asyncpg.Pool, n: int) -> list[tuple[str, int]]:
    """`n` calls running on ENGINE, as (call id, attempts), in call-id order."""
    ids = sorted(new_call_id() for _ in range(n))
    for cid in ids:
        await accept_call(
            pool,
            call_id=cid,
            program_id=PROGRAM,
            thread_id="t0",
            client_call_id=None,
            parent_ids=[],
            reply_to="_INBOX.lock-order",
            request_json=f'{{"v": 1, "program_id": "{PROGRAM}", "prompt": "x"}}',
        )
    rows = await pool.fetch(
        """UPDATE calls SET status = 'running', engine_id = $2, level = 0
           WHERE id = ANY($1::text[]) RETURNING id, attempts""",
        ids,
        ENGINE,
    )
    got = {r["id"]: r["attempts"] for r in rows}
    return [(cid, got[cid]) for cid in ids]


async def _waiting_for_lock(pool: asyncpg.Pool, pid: int, wait_s: float = 10.0) -> None:
    """Until backend `pid` is blocked on a lock (its statement has reached the gate)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        kind = await pool.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        if kind == "Lock":
            return
        assert asyncio.get_running_loop().time() < deadline, f"backend {pid} never waited"
        await asyncio.sleep(0.02)


async def _fold(conn: asyncpg.Connection, ids: list[str]) -> object:
    return await fold_progress(
        conn,
        [
            Progress(call_id=c, engine_id=ENGINE, service=5.0, run_s=0.1, program_id=PROGRAM)
            for c in ids
        ],
    )


async def _raise_level(conn: asyncpg.Connection, ids: list[str]) -> object:
    changes = [LevelChange(call_id=c, from_level=0, to_level=1, reason="test") for c in ids]
    return await change_levels(conn, changes, kind="demote", actor="test")


async def race(pool: asyncpg.Pool, save: Save, scheduler: Scheduler) -> None:
    """The interleaving in the module doc; raises what either side raised."""
    (a, att_a), (b, att_b) = await _running_calls(pool, 2)
    async with pool.acquire() as gate, pool.acquire() as sched, pool.acquire() as eng:
        gate_tx = gate.transaction()
        await gate_tx.start()
        await gate.execute("SELECT 1 FROM calls WHERE id = $1 FOR UPDATE", a)
        sched_task = asyncio.create_task(scheduler(sched, [a, b]))
        await _waiting_for_lock(pool, sched.get_server_pid())
        save_task = asyncio.create_task(
            save(eng, ENGINE, [(b, att_b, [1, 2], None), (a, att_a, [3], None)])
        )
        await _waiting_for_lock(pool, eng.get_server_pid())
        await gate_tx.rollback()
        results = await asyncio.wait_for(
            asyncio.gather(sched_task, save_task, return_exceptions=True), 30
        )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    saved = await pool.fetch(
        "SELECT id, output_token_ids FROM calls WHERE id = ANY($1::text[])", [a, b]
    )
    assert {r["id"]: r["output_token_ids"] for r in saved} == {a: [3], b: [1, 2]}


@pytest.fixture
async def pool(make_database: Callable[..., str]) -> asyncpg.Pool:
    p = await create_pool(make_database(), max_size=4)
    yield p
    await p.close()


@pytest.mark.parametrize("scheduler", [_fold, _raise_level], ids=["fold", "change_levels"])
async def test_progress_save_never_deadlocks_with_the_scheduler(
    pool: asyncpg.Pool, scheduler: Scheduler
) -> None:
    await race(pool, save_progress, scheduler)


async def _accept(pool: asyncpg.Pool, program: str) -> str:
    cid = new_call_id()
    await accept_call(
        pool,
        call_id=cid,
        program_id=program,
        thread_id="t0",
        client_call_id=None,
        parent_ids=[],
        reply_to="_INBOX.lock-order",
        request_json=f'{{"v": 1, "program_id": "{program}", "prompt": "x"}}',
    )
    return cid


async def test_engine_pins_never_deadlock_with_a_fold(pool: asyncpg.Pool) -> None:
    """A scheduler's engine pins for programs [b, a] (in its batch's order) against a fold of
    both programs' service: the fold locks program rows in id order (a, b) and, gated on `a`,
    gets it first; pins that locked `b` before queueing on `a` would close a cycle. Pins lock
    in id order too, so both commit."""
    pa, pb = "lock-pin-a", "lock-pin-b"
    running = {p: await _accept(pool, p) for p in (pa, pb)}
    await pool.execute(
        "UPDATE calls SET status = 'running', engine_id = $2, level = 0 WHERE id = ANY($1::text[])",
        list(running.values()),
        ENGINE,
    )
    queued = {p: await _accept(pool, p) for p in (pb, pa)}
    items = [
        DispatchItem(
            call_id=cid,
            attempt=0,
            engine_id=ENGINE,
            level=0,
            priority=0.0,
            reason="test",
            program_id=p,
            pin=ENGINE,
        )
        for p, cid in queued.items()
    ]
    progress = [
        Progress(call_id=cid, engine_id=ENGINE, service=5.0, run_s=0.1, program_id=p)
        for p, cid in running.items()
    ]
    async with pool.acquire() as gate, pool.acquire() as sched, pool.acquire() as folder:
        gate_tx = gate.transaction()
        await gate_tx.start()
        await gate.execute("SELECT 1 FROM programs WHERE id = $1 FOR UPDATE", pa)
        fold_task = asyncio.create_task(fold_progress(folder, progress))
        await _waiting_for_lock(pool, folder.get_server_pid())
        pin_task = asyncio.create_task(mark_dispatched_many(sched, items, actor="test"))
        await _waiting_for_lock(pool, sched.get_server_pid())
        await gate_tx.rollback()
        results = await asyncio.wait_for(
            asyncio.gather(fold_task, pin_task, return_exceptions=True), 30
        )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    pins = await pool.fetch(
        "SELECT id, engine_affinity, attained FROM programs WHERE id = ANY($1::text[])",
        [pa, pb],
    )
    assert {r["id"]: (r["engine_affinity"], r["attained"]) for r in pins} == {
        pa: (ENGINE, 5.0),
        pb: (ENGINE, 5.0),
    }
