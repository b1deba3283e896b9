"""Service accounting in Postgres under concurrency: no lost update, no deadlock.

Several "scheduler replicas" (connections) fold progress reports of the same program at the same
time while an "engine" finishes some of its calls; afterwards every call's service is the furthest
progress reported (or its final service), and the program's and threads' totals are exactly the
sums — what `fold_progress`'s row locks and atomic increments promise. Also: stale, duplicate and
foreign-engine reports change nothing, and the ATLAS update done in SQL at finish equals the
policy core's `atlas_update`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from functools import reduce

import pytest
from builders import dispatched_call

from autellix.policy import atlas_update
from autellix.store.db import create_pool
from autellix.store.dispatch import _LOAD_CALLS, CallRow, load_call
from autellix.store.finish import finish_call
from autellix.store.progress import Progress, fold_progress

PROGRAM = "fold-prog"
ENGINE = "fold-engine"


async def _setup(pool, n: int, priorities: list[float]) -> list[tuple[str, str]]:
    calls = []
    for i in range(n):
        thread = f"t{i % 3}"
        call_id = await dispatched_call(
            pool,
            program_id=PROGRAM,
            engine_id=ENGINE,
            priority=priorities[i],
            thread_id=thread,
            reply_to="_INBOX.x",
            request_json='{"v": 1, "program_id": "fold-prog", "prompt": "x"}',
        )
        calls.append((call_id, thread))
    return calls


@pytest.fixture
def db(make_database: Callable[..., str]) -> str:
    return make_database()


async def test_concurrent_folds_and_finishes_lose_no_update(db: str) -> None:
    rng = random.Random(7)
    n = 12
    priorities = [float(rng.randint(0, 50)) for _ in range(n)]
    pool = await create_pool(db, max_size=8)
    try:
        calls = await _setup(pool, n, priorities)
        truth = {cid: 0.0 for cid, _ in calls}
        finished: dict[str, float] = {}
        stop = asyncio.Event()

        async def engine() -> None:  # advances progress, finishes half of the calls
            for step in range(120):
                for cid in truth:
                    if cid not in finished:
                        truth[cid] += rng.randint(0, 3)
                if step % 20 == 19:
                    cid = rng.choice([c for c in truth if c not in finished])
                    final = truth[cid] + 1.0
                    row = await finish_call(
                        pool,
                        call_id=cid,
                        attempts=1,
                        engine_id=ENGINE,
                        prompt_tokens=1,
                        completion_tokens=int(final),
                        cached_tokens=0,
                        service=final,
                        run_s=0.1,
                        finish_reason="length",
                        output_token_ids=None,
                    )
                    assert row is not None
                    truth[cid] = finished[cid] = final
                await asyncio.sleep(0.001)
            stop.set()

        async def replica(seed: int) -> int:
            r = random.Random(seed)
            folds = 0
            while not stop.is_set():
                picked = r.sample(list(truth), k=r.randint(1, n))
                items = [
                    Progress(c, ENGINE, truth[c] - r.choice((0, 0, 1)), 0.01, PROGRAM)
                    for c in picked
                ]
                items.append(Progress(picked[0], "other-engine", 10_000.0, 9.0, PROGRAM))
                async with pool.acquire() as conn:
                    await fold_progress(conn, items)
                folds += 1
            return folds

        results = await asyncio.gather(engine(), *(replica(s) for s in range(4)))
        assert all(f > 5 for f in results[1:])
        async with pool.acquire() as conn:  # last reports: everything up to date
            await fold_progress(conn, [Progress(c, ENGINE, truth[c], 0.01, PROGRAM) for c in truth])
            await fold_progress(  # stale and duplicate reports change nothing
                conn, [Progress(c, ENGINE, truth[c] / 2, 0.0, PROGRAM) for c in truth]
            )
        rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM calls")}
        for cid, service in truth.items():
            assert rows[cid]["service"] == pytest.approx(service), cid
        p = await pool.fetchrow("SELECT * FROM programs WHERE id = $1", PROGRAM)
        assert p["attained"] == pytest.approx(sum(truth.values()))
        assert p["total_service"] == pytest.approx(sum(finished.values()))
        expect_critical = reduce(
            lambda acc, cid: atlas_update(acc, rows[cid]["priority"], finished[cid]),
            finished,
            0.0,
        )
        assert p["service"] == pytest.approx(expect_critical)
        for t in await pool.fetch("SELECT * FROM threads WHERE program_id = $1", PROGRAM):
            mine = [truth[cid] for cid, th in calls if th == t["thread_id"]]
            assert t["service"] == pytest.approx(sum(mine)), t["thread_id"]
    finally:
        await pool.close()


async def test_load_calls_columns_are_call_row_fields(db: str) -> None:
    """`CallRow` is built positionally from `_LOAD_CALLS` (speed): same names, same order."""
    import dataclasses

    pool = await create_pool(db, max_size=2)
    try:
        ((cid, _),) = await _setup(pool, 1, [3.0])
        row = (await pool.fetch(_LOAD_CALLS, [cid]))[0]
        assert list(row.keys()) == [f.name for f in dataclasses.fields(CallRow)]
        call = await load_call(pool, cid)
        assert call is not None and call.id == cid and call.priority == 3.0
        assert call.prompt_ids_len is None and call.prompt_chars == 1  # prompt "x"
        assert call.program_status == "open" and call.status == "dispatched"
        # explicit nulls (a request dumped without exclude_none) are not arrays
        await pool.execute(
            """UPDATE calls SET request = '{"prompt": null, "messages": null,
                                           "prompt_token_ids": [4, 5]}'::jsonb WHERE id = $1""",
            cid,
        )
        call = await load_call(pool, cid)
        assert call is not None and call.prompt_ids_len == 2 and call.prompt_chars == 0
    finally:
        await pool.close()
