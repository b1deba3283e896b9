"""The cheaper hot paths of issue 5 keep their guarantees (real NATS and Postgres).

* `AsyncPublisher` (scheduler Dispatches, frontend ScheduleCalls): a batch is stored once per
  message id, a retried batch adds nothing (duplicate window), and a subject no stream takes is
  an error, not a silent loss.
* Batched starts (`mark_running_many`): only the owning engine's current attempt moves to
  running, `started_at` is backdated by `started_ago_s`, and nothing moves twice.
* Finish straight from `dispatched` (a call that ended before its start was written): the
  conditional `finish_call` still answers once, records the start, and a late start write finds
  nothing to do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import nats
import pytest
from builders import dispatched_call
from nats.js import api as jsapi

from autellix.store.db import create_pool
from autellix.store.finish import finish_call
from autellix.store.running import mark_running_many, save_progress
from autellix.transport.publisher import AsyncPublisher, Outgoing, PublishError

ENGINE = "ovh-engine"


@pytest.fixture
def db(make_database: Callable[..., str]) -> str:
    return make_database()


async def test_async_publisher_stores_each_message_id_once(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    stream = f"OVH_{uuid.uuid4().hex[:8]}"
    subject = f"ovh.{stream}.x"
    js = nc.jetstream()
    await js.add_stream(
        jsapi.StreamConfig(
            name=stream,
            subjects=[subject],
            storage=jsapi.StorageType.MEMORY,
            duplicate_window=60.0,
        )
    )
    pub = AsyncPublisher(nc, ack_wait_s=2.0, attempts=2)
    try:
        batch = [Outgoing(subject, f"m{i}".encode(), f"id-{i}") for i in range(50)]
        await pub.publish(batch)
        await pub.publish(batch[:10])  # a retried batch: same ids, dropped by the stream
        info = await js.stream_info(stream)
        assert info.state.messages == 50
        with pytest.raises((PublishError, nats.errors.NoRespondersError)):
            await pub.publish([Outgoing(f"ovh.nostream.{stream}", b"x", "lost-1")])
    finally:
        await pub.stop()
        await js.delete_stream(stream)
        await nc.close()


async def _dispatched_call(pool, program: str) -> str:  # type: ignore[no-untyped-def]
    return await dispatched_call(
        pool,
        program_id=program,
        engine_id=ENGINE,
        thread_id="t0",
        reply_to="_INBOX.ovh",
        request_json='{"v": 1, "program_id": "p", "prompt_token_ids": [1, 2, 3]}',
    )


async def test_batched_starts_only_move_owned_attempts(db: str) -> None:
    pool = await create_pool(db, max_size=4)
    try:
        a = await _dispatched_call(pool, "ovh-starts")
        b = await _dispatched_call(pool, "ovh-starts")
        c = await _dispatched_call(pool, "ovh-starts")
        owned = await mark_running_many(
            pool,
            ENGINE,
            [(a, 1, 3, 5.0), (b, 2, 3, 0.0), (c, 1, 3, 0.0)],  # b: a stale attempt
        )
        assert owned == {a, c}
        assert await mark_running_many(pool, "other-engine", [(a, 1, 3, 0.0)]) == set()
        assert await mark_running_many(pool, ENGINE, [(a, 1, 3, 0.0)]) == set()  # once
        rows = {
            r["id"]: r
            for r in await pool.fetch(
                "SELECT id, status, prompt_tokens, EXTRACT(EPOCH FROM started_at - "
                "dispatched_at)::float8 AS lag FROM calls WHERE id = ANY($1::text[])",
                [a, b, c],
            )
        }
        assert rows[a]["status"] == "running" and rows[a]["prompt_tokens"] == 3
        assert rows[b]["status"] == "dispatched"
        assert rows[a]["lag"] < rows[c]["lag"]  # a's start was backdated by 5 s
    finally:
        await pool.close()


async def test_finish_straight_from_dispatched_answers_once(db: str) -> None:
    pool = await create_pool(db, max_size=4)
    try:
        cid = await _dispatched_call(pool, "ovh-finish")
        kwargs = dict(
            call_id=cid,
            attempts=1,
            engine_id=ENGINE,
            prompt_tokens=3,
            completion_tokens=1,
            cached_tokens=0,
            service=1.0,
            run_s=0.5,
            finish_reason="length",
            output_token_ids=[7],
        )
        await asyncio.sleep(0.6)  # the run started 0.5 s ago, after the call was accepted
        row = await finish_call(pool, started_ago_s=0.5, **kwargs)  # type: ignore[arg-type]
        assert row is not None and row.started_at is not None
        gap = (row.finished_at - row.started_at).total_seconds()
        assert 0.45 <= gap <= 5.0
        assert abs(row.queue_s - (row.started_at - row.accepted_at).total_seconds()) < 1e-3
        again = await finish_call(pool, started_ago_s=0.5, **kwargs)  # type: ignore[arg-type]
        assert again is None  # answered once
        assert await mark_running_many(pool, ENGINE, [(cid, 1, 3, 0.0)]) == set()
        status = await pool.fetchval("SELECT status FROM calls WHERE id = $1", cid)
        assert status == "finished"
    finally:
        await pool.close()


async def test_progress_saves_never_go_backwards(db: str) -> None:
    """Two saves of one running call in flight at once (the periodic one and a hand-back's final
    one) may commit in either order; the shorter, older one must not win, or the next engine
    resumes from it and the caller's stream gets tokens twice (CI saw exactly that)."""
    pool = await create_pool(db, max_size=4)
    try:
        cid = await _dispatched_call(pool, "ovh-progress")
        assert await mark_running_many(pool, ENGINE, [(cid, 1, 3, 0.0)]) == {cid}
        newer, older = list(range(706)), list(range(496))
        await save_progress(pool, ENGINE, [(cid, 1, newer, None)])
        await save_progress(pool, ENGINE, [(cid, 1, older, None)])  # the stale one commits last
        row = await pool.fetchrow(
            "SELECT output_token_ids, completion_tokens FROM calls WHERE id = $1", cid
        )
        assert row["output_token_ids"] == newer and row["completion_tokens"] == 706
        await save_progress(pool, ENGINE, [(cid, 1, [*newer, 1, 2], None)])  # growing still saves
        n = await pool.fetchval("SELECT completion_tokens FROM calls WHERE id = $1", cid)
        assert n == 708
        await save_progress(pool, "other-engine", [(cid, 1, list(range(900)), None)])  # not its own
        n = await pool.fetchval("SELECT completion_tokens FROM calls WHERE id = $1", cid)
        assert n == 708
    finally:
        await pool.close()
