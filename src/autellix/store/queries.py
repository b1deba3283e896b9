"""Every statement the services run, one function each, one round trip each where possible.

The rule that makes the system crash-safe lives here: **every state change of a call is a
conditional UPDATE** that names the state it expects (`WHERE status IN (...) AND attempts = $n
AND engine_id = $e`). Whoever's update matches owns the transition; everybody else sees zero rows
and backs off. Redelivered messages, two scheduler replicas, a zombie engine that comes back after
its calls were re-dispatched: all reduce to "the second UPDATE matches nothing".

Call states: queued → dispatched → running ⇄ preempted → finished | failed. `attempts` counts
dispatches: a dispatch moves `attempts` from k to k+1, and an engine only owns a call while
`engine_id` is itself and `attempts` equals the attempt it was handed (Dispatch.attempt + 1).
Every decision also writes a `call_events` row (kind dispatch | requeue | preempt | finish | fail
| republish) in the same statement, so a call's history explains itself.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.Pool
ACTIVE = ("dispatched", "running", "preempted")
TERMINAL = ("finished", "failed")


def new_call_id() -> str:
    """Time-ordered (ms) + 64 random bits: sorts by arrival in logs, never collides in practice."""
    return f"c-{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def new_program_id() -> str:
    return f"p-{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True, slots=True)
class ProgramRow:
    id: str
    status: str
    calls_total: int
    calls_finished: int
    prompt_tokens: int
    completion_tokens: int
    service: float
    waiting_s: float


_PROGRAM_COLS = (
    "id, status, calls_total, calls_finished, prompt_tokens, completion_tokens, service, waiting_s"
)
# calls_total as it is now (the column is only brought up to date at close)
_PROGRAM_COLS_LIVE = (
    "id, status, (SELECT count(*) FROM calls c WHERE c.program_id = programs.id)::int AS"
    " calls_total, calls_finished, prompt_tokens, completion_tokens, service, waiting_s"
)


def _program(row: asyncpg.Record) -> ProgramRow:
    return ProgramRow(**dict(row))


async def open_program(conn: Conn, program_id: str, meta: dict[str, str]) -> ProgramRow:
    """Create the program if new; return its row either way (a closed one stays closed)."""
    row = await conn.fetchrow(
        f"""INSERT INTO programs (id, meta) VALUES ($1, $2::jsonb)
            ON CONFLICT (id) DO UPDATE SET meta = programs.meta
            RETURNING {_PROGRAM_COLS_LIVE}""",
        program_id,
        json.dumps(meta),
    )
    return _program(row)


async def close_program(conn: Conn, program_id: str) -> ProgramRow | None:
    row = await conn.fetchrow(
        f"""UPDATE programs SET status = 'closed', closed_at = COALESCE(closed_at, now()),
                calls_total = (SELECT count(*) FROM calls c WHERE c.program_id = programs.id)
            WHERE id = $1 RETURNING {_PROGRAM_COLS}""",
        program_id,
    )
    return _program(row) if row else None


async def get_program(conn: Conn, program_id: str) -> ProgramRow | None:
    row = await conn.fetchrow(
        f"SELECT {_PROGRAM_COLS_LIVE} FROM programs WHERE id = $1", program_id
    )
    return _program(row) if row else None


# --------------------------------------------------------------------------- accept


@dataclass(frozen=True, slots=True)
class AcceptResult:
    call_id: str
    duplicate: bool
    program_closed: bool = False
    status: str = "queued"  # of the existing call when duplicate


async def accept_call(
    conn: Conn,
    *,
    call_id: str,
    program_id: str,
    thread_id: str,
    client_call_id: str | None,
    parent_ids: Sequence[str],
    reply_to: str,
    request_json: str,
) -> AcceptResult:
    """Register program (auto-created while open), thread and call: one statement, one commit.

    The program upsert takes the program's row lock until commit, so a concurrent close either
    happens before (the upsert's `WHERE status = 'open'` fails: we report it closed) or waits
    for us. A duplicate `client_call_id` inserts nothing (the unique constraint) and returns the
    existing call's id. `programs.calls_total` is not touched here (it would be a second update
    of the program row in one statement); `close_program` / `get_program` count the calls.
    """
    row = await conn.fetchrow(
        """WITH prog AS (
               INSERT INTO programs (id, last_call_at) VALUES ($2, now())
               ON CONFLICT (id) DO UPDATE SET last_call_at = now()
                   WHERE programs.status = 'open'
               RETURNING id),
           ins AS (
               INSERT INTO calls (id, program_id, thread_id, client_call_id, parent_ids,
                                  status, reply_to, request)
               SELECT $1, prog.id, $3, $4, $5, 'queued', $6, $7::jsonb FROM prog
               ON CONFLICT (program_id, client_call_id) DO NOTHING
               RETURNING id),
           thr AS (
               INSERT INTO threads (program_id, thread_id, calls)
               SELECT $2, $3, 1 FROM ins
               ON CONFLICT (program_id, thread_id) DO UPDATE SET calls = threads.calls + 1)
           SELECT (SELECT id FROM prog) AS program, (SELECT id FROM ins) AS inserted""",
        call_id,
        program_id,
        thread_id,
        client_call_id,
        list(parent_ids),
        reply_to,
        request_json,
    )
    if row["program"] is None:
        return AcceptResult(call_id="", duplicate=False, program_closed=True)
    if row["inserted"] is not None:
        return AcceptResult(call_id=row["inserted"], duplicate=False)
    dup = await conn.fetchrow(
        "SELECT id, status FROM calls WHERE program_id = $1 AND client_call_id = $2",
        program_id,
        client_call_id,
    )
    assert dup is not None, "conflict without an existing row"
    return AcceptResult(call_id=dup["id"], duplicate=True, status=dup["status"])


async def redirect_reply(conn: Conn, call_id: str, reply_to: str) -> bool:
    """Send a non-terminal call's final to a new inbox (a client retried with its
    client_call_id). False when the call is already terminal: replay the stored result."""
    got = await conn.fetchval(
        """UPDATE calls SET reply_to = $2
           WHERE id = $1 AND status NOT IN ('finished', 'failed') RETURNING id""",
        call_id,
        reply_to,
    )
    return got is not None


# --------------------------------------------------------------------------- scheduling


@dataclass(frozen=True, slots=True)
class CallRow:
    """What the scheduler needs to decide and to build a Dispatch."""

    id: str
    program_id: str
    thread_id: str
    status: str
    attempts: int
    engine_id: str | None
    level: int
    priority: float
    reply_to: str
    request: dict[str, Any]
    accepted_at: datetime
    output_token_ids: list[int] | None
    program_service: float
    program_status: str
    engine_affinity: str | None
    parent_ids: list[str]


async def load_call(conn: Conn, call_id: str) -> CallRow | None:
    row = await conn.fetchrow(
        """SELECT c.id, c.program_id, c.thread_id, c.status, c.attempts, c.engine_id, c.level,
                  c.priority, c.reply_to, c.request, c.accepted_at, c.output_token_ids,
                  p.service AS program_service, p.status AS program_status, p.engine_affinity,
                  c.parent_ids
           FROM calls c JOIN programs p ON p.id = c.program_id WHERE c.id = $1""",
        call_id,
    )
    return CallRow(**dict(row)) if row else None


async def mark_dispatched(
    conn: Conn,
    *,
    call_id: str,
    attempt: int,
    engine_id: str,
    level: int,
    priority: float,
    actor: str,
    reason: str,
) -> datetime | None:
    """queued (attempts = attempt) → dispatched (attempts = attempt + 1), with its event.

    Returns dispatched_at, or None when someone else already made this transition.
    """
    return await conn.fetchval(
        """WITH upd AS (
               UPDATE calls SET status = 'dispatched', engine_id = $3, level = $4, priority = $5,
                                attempts = $2 + 1, dispatched_at = now()
               WHERE id = $1 AND status = 'queued' AND attempts = $2
               RETURNING id, dispatched_at),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason)
               SELECT id, 'dispatch', $6, $4, $3, $7 FROM upd)
           SELECT dispatched_at FROM upd""",
        call_id,
        attempt,
        engine_id,
        level,
        priority,
        actor,
        reason,
    )


async def fail_call(
    conn: Conn,
    *,
    call_id: str,
    code: str,
    message: str,
    actor: str,
    from_statuses: Sequence[str],
    attempts: int | None = None,
    engine_id: str | None = None,
) -> str | None:
    """Move a call to failed if it is in one of `from_statuses` (and, for an engine, still owned
    by it). Returns the reply subject to send the CallError to, or None if not ours to fail."""
    return await conn.fetchval(
        """WITH upd AS (
               UPDATE calls SET status = 'failed', error_code = $2, error_message = $3,
                                finished_at = now()
               WHERE id = $1 AND status = ANY($5::text[])
                 AND ($6::int IS NULL OR attempts = $6)
                 AND ($7::text IS NULL OR engine_id = $7)
               RETURNING id, reply_to, program_id),
           prg AS (
               UPDATE programs SET last_finish_at = now()
               FROM upd WHERE programs.id = upd.program_id),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, engine_id, reason)
               SELECT id, 'fail', $4, $7, $2 || ': ' || $3 FROM upd)
           SELECT reply_to FROM upd""",
        call_id,
        code,
        message,
        actor,
        list(from_statuses),
        attempts,
        engine_id,
    )


@dataclass(frozen=True, slots=True)
class RequeuedCall:
    id: str
    program_id: str
    reply_to: str
    attempts: int
    old_engine: str | None


async def requeue_engine_calls(
    conn: Conn, engine_ids: Sequence[str], *, actor: str, reason: str
) -> list[RequeuedCall]:
    """Take every active call away from `engine_ids` (lost or stopping engines): back to queued,
    keeping `attempts`, so the next dispatch is attempt + 1 and the old engine owns nothing."""
    rows = await conn.fetch(
        """WITH old AS (
               SELECT id, engine_id FROM calls
               WHERE engine_id = ANY($1::text[]) AND status = ANY($4::text[])
               FOR UPDATE),
           upd AS (
               UPDATE calls c SET status = 'queued', engine_id = NULL
               FROM old WHERE c.id = old.id
               RETURNING c.id, c.program_id, c.reply_to, c.attempts, old.engine_id AS old_engine),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, engine_id, reason)
               SELECT id, 'requeue', $2, old_engine, $3 FROM upd)
           SELECT * FROM upd""",
        list(engine_ids),
        actor,
        reason,
        list(ACTIVE),
    )
    return [RequeuedCall(**dict(r)) for r in rows]


async def requeue_call(
    conn: Conn, call_id: str, *, attempts: int, engine_id: str, actor: str, reason: str
) -> RequeuedCall | None:
    """One call back to queued (an engine hands back a call it will not run)."""
    row = await conn.fetchrow(
        """WITH upd AS (
               UPDATE calls SET status = 'queued', engine_id = NULL
               WHERE id = $1 AND attempts = $2 AND engine_id = $3 AND status = ANY($6::text[])
               RETURNING id, program_id, reply_to, attempts, $3::text AS old_engine),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, engine_id, reason)
               SELECT id, 'requeue', $4, old_engine, $5 FROM upd)
           SELECT * FROM upd""",
        call_id,
        attempts,
        engine_id,
        actor,
        reason,
        list(ACTIVE),
    )
    return RequeuedCall(**dict(row)) if row else None


async def stale_queued_calls(
    conn: Conn, *, older_than_s: float, limit: int = 500, actor: str = "reconciler"
) -> list[RequeuedCall]:
    """Queued calls nobody touched for `older_than_s` (their ScheduleCall may never have been
    published); marks each with a 'republish' event so the next pass waits again."""
    rows = await conn.fetch(
        """WITH stale AS (
               SELECT c.id, c.program_id, c.reply_to, c.attempts FROM calls c
               WHERE c.status = 'queued'
                 AND c.accepted_at < now() - make_interval(secs => $1)
                 AND COALESCE((SELECT max(e.at) FROM call_events e WHERE e.call_id = c.id),
                              c.accepted_at) < now() - make_interval(secs => $1)
               ORDER BY c.accepted_at LIMIT $2),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, reason)
               SELECT id, 'republish', $3, 'queued with no activity' FROM stale)
           SELECT id, program_id, reply_to, attempts, NULL::text AS old_engine FROM stale""",
        older_than_s,
        limit,
        actor,
    )
    return [RequeuedCall(**dict(r)) for r in rows]


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True, slots=True)
class EngineRow:
    id: str
    backend: str
    model: str
    status: str
    max_batch: int
    running: int
    waiting: int
    kv_cache_usage: float
    age_s: float


async def register_engine(
    conn: Conn, *, engine_id: str, backend: str, model: str, max_batch: int, meta: dict[str, Any]
) -> None:
    await conn.execute(
        """INSERT INTO engines (id, backend, model, status, max_batch, meta)
           VALUES ($1, $2, $3, 'up', $4, $5::jsonb)
           ON CONFLICT (id) DO UPDATE SET backend = $2, model = $3, status = 'up',
               max_batch = $4, meta = $5::jsonb, started_at = now(), heartbeat_at = now(),
               running = 0, waiting = 0""",
        engine_id,
        backend,
        model,
        max_batch,
        json.dumps(meta),
    )


async def engine_heartbeat(
    conn: Conn, *, engine_id: str, running: int, waiting: int, kv_cache_usage: float
) -> None:
    await conn.execute(
        """UPDATE engines SET heartbeat_at = now(), status = 'up', running = $2, waiting = $3,
                              kv_cache_usage = $4
           WHERE id = $1""",
        engine_id,
        running,
        waiting,
        kv_cache_usage,
    )


async def set_engine_status(conn: Conn, engine_id: str, status: str) -> None:
    await conn.execute("UPDATE engines SET status = $2 WHERE id = $1", engine_id, status)


async def live_engines(conn: Conn, *, stale_after_s: float) -> list[EngineRow]:
    rows = await conn.fetch(
        """SELECT id, backend, model, status, max_batch, running, waiting, kv_cache_usage,
                  EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age_s
           FROM engines
           WHERE status = 'up' AND heartbeat_at > now() - make_interval(secs => $1)""",
        stale_after_s,
    )
    return [EngineRow(**dict(r)) for r in rows]


async def mark_stale_engines_down(conn: Conn, *, stale_after_s: float) -> list[str]:
    rows = await conn.fetch(
        """UPDATE engines SET status = 'down'
           WHERE status = 'up' AND heartbeat_at < now() - make_interval(secs => $1)
           RETURNING id""",
        stale_after_s,
    )
    return [r["id"] for r in rows]


async def down_engines_with_calls(conn: Conn) -> list[str]:
    """Engines marked down that still own active calls (a reaper that died half-way)."""
    rows = await conn.fetch(
        """SELECT DISTINCT c.engine_id FROM calls c JOIN engines e ON e.id = c.engine_id
           WHERE e.status = 'down' AND c.status = ANY($1::text[])""",
        list(ACTIVE),
    )
    return [r["engine_id"] for r in rows]


# --------------------------------------------------------------------------- engine side


async def mark_running(
    conn: Conn, *, call_id: str, attempts: int, engine_id: str, prompt_tokens: int
) -> bool:
    """dispatched | preempted → running, only while this engine owns this attempt."""
    got = await conn.fetchval(
        """UPDATE calls SET status = 'running', started_at = COALESCE(started_at, now()),
                            prompt_tokens = $4
           WHERE id = $1 AND attempts = $2 AND engine_id = $3
             AND status IN ('dispatched', 'preempted')
           RETURNING id""",
        call_id,
        attempts,
        engine_id,
        prompt_tokens,
    )
    return got is not None


async def mark_preempted(
    conn: Conn,
    *,
    call_id: str,
    attempts: int,
    engine_id: str,
    output_token_ids: list[int],
    level: int,
    reason: str,
) -> bool:
    got = await conn.fetchval(
        """WITH upd AS (
               UPDATE calls SET status = 'preempted', preemptions = preemptions + 1,
                                output_token_ids = $4, completion_tokens = cardinality($4::int[]),
                                level = $5
               WHERE id = $1 AND attempts = $2 AND engine_id = $3 AND status = 'running'
               RETURNING id),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason)
               SELECT id, 'preempt', $3, $5, $3, $6 FROM upd)
           SELECT id FROM upd""",
        call_id,
        attempts,
        engine_id,
        output_token_ids,
        level,
        reason,
    )
    return got is not None


async def save_progress(
    conn: Conn, engine_id: str, items: Sequence[tuple[str, int, list[int]]]
) -> None:
    """Persist tokens generated so far for running calls (call_id, attempts, token_ids), so a
    call re-dispatched after its engine is lost resumes instead of starting over."""
    if not items:
        return
    await conn.executemany(
        """UPDATE calls SET output_token_ids = $3, completion_tokens = cardinality($3::int[])
           WHERE id = $1 AND attempts = $2 AND engine_id = $4 AND status = 'running'""",
        [(cid, att, toks, engine_id) for cid, att, toks in items],
    )


async def owned_calls(conn: Conn, engine_id: str, call_ids: Sequence[str]) -> dict[str, int]:
    """{call_id: attempts} of the given calls this engine still owns (active, engine_id = it)."""
    rows = await conn.fetch(
        """SELECT id, attempts FROM calls
           WHERE id = ANY($1::text[]) AND engine_id = $2 AND status = ANY($3::text[])""",
        list(call_ids),
        engine_id,
        list(ACTIVE),
    )
    return {r["id"]: r["attempts"] for r in rows}


async def engine_active_calls(
    conn: Conn, engine_id: str, *, older_than_s: float
) -> list[RequeuedCall]:
    """Active calls owned by `engine_id` that were dispatched more than `older_than_s` ago."""
    rows = await conn.fetch(
        """SELECT id, program_id, reply_to, attempts, engine_id AS old_engine FROM calls
           WHERE engine_id = $1 AND status = ANY($2::text[])
             AND COALESCE(dispatched_at, accepted_at) < now() - make_interval(secs => $3)""",
        engine_id,
        list(ACTIVE),
        older_than_s,
    )
    return [RequeuedCall(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class FinishedRow:
    id: str
    program_id: str
    reply_to: str
    accepted_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    queue_s: float
    level: int
    preemptions: int


async def finish_call(
    conn: Conn,
    *,
    call_id: str,
    attempts: int,
    engine_id: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    service: float,
    run_s: float,
    finish_reason: str,
    output_token_ids: list[int] | None,
) -> FinishedRow | None:
    """The one transition that answers a call: finished, program/thread totals, event.

    Program service follows the ATLAS update (`max(program.service, entry priority + this
    call's service)`); the live policies may refine it, the statement stays one round trip.
    """
    row = await conn.fetchrow(
        """WITH c AS (
               UPDATE calls SET status = 'finished', finished_at = now(), prompt_tokens = $4,
                   completion_tokens = $5, cached_tokens = $6, service = $7, run_s = $8,
                   finish_reason = $9, output_token_ids = $10,
                   queue_s = EXTRACT(EPOCH FROM COALESCE(started_at, now()) - accepted_at)
               WHERE id = $1 AND attempts = $2 AND engine_id = $3
                 AND status IN ('dispatched', 'running', 'preempted')
               RETURNING id, program_id, thread_id, reply_to, accepted_at, dispatched_at,
                         started_at, finished_at, queue_s, priority, level, preemptions),
           p AS (
               UPDATE programs p SET calls_finished = p.calls_finished + 1,
                   prompt_tokens = p.prompt_tokens + $4,
                   completion_tokens = p.completion_tokens + $5,
                   total_service = p.total_service + $7,
                   service = GREATEST(p.service, c.priority + $7),
                   waiting_s = p.waiting_s + c.queue_s, last_finish_at = now()
               FROM c WHERE p.id = c.program_id),
           t AS (
               UPDATE threads t SET service = t.service + $7
               FROM c WHERE t.program_id = c.program_id AND t.thread_id = c.thread_id),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason)
               SELECT id, 'finish', $3, level, $3, $9 FROM c)
           SELECT id, program_id, reply_to, accepted_at, dispatched_at, started_at, finished_at,
                  queue_s, level, preemptions FROM c""",
        call_id,
        attempts,
        engine_id,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        service,
        run_s,
        finish_reason,
        output_token_ids,
    )
    return FinishedRow(**dict(row)) if row else None


async def call_record(conn: Conn, call_id: str) -> dict[str, Any] | None:
    """A call's whole row plus its engine's backend/model (to replay a stored result)."""
    row = await conn.fetchrow(
        """SELECT c.*, e.backend AS engine_backend, e.model AS engine_model
           FROM calls c LEFT JOIN engines e ON e.id = c.engine_id WHERE c.id = $1""",
        call_id,
    )
    return dict(row) if row else None
