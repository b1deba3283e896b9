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
        f"""UPDATE programs SET status = CASE WHEN status = 'open' THEN 'closed' ELSE status END,
                closed_at = COALESCE(closed_at, now()),
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


@dataclass(slots=True)
class CallRow:
    """What the scheduler needs to decide and to build a Dispatch: the call, its program's row
    (the paper's program table) and, for exact ATLAS, its parents' critical path.

    Built positionally from `_LOAD_CALLS` (its columns are in field order; a test checks), and
    not frozen: on the scheduler's hot path a frozen 33-field init cost as much as the query."""

    id: str
    program_id: str
    thread_id: str
    status: str
    attempts: int
    engine_id: str | None
    level: int
    priority: float
    reply_to: str
    request_json: str  # the CallRequest as stored (validated by the frontend), JSON text
    accepted_at: datetime
    output_token_ids: list[int] | None
    program_service: float  # ATLAS scalar: longest critical path seen
    program_status: str
    engine_affinity: str | None
    parent_ids: list[str]
    # live scheduling (0002)
    service: float = 0.0
    rank_base: float = 0.0
    tiebreak: float = 0.0
    aged: bool = False
    run_s: float = 0.0
    control_seq: int = 0
    accepted_s: float = 0.0  # accepted_at as epoch seconds
    program_completed: float = 0.0  # PLAS: service of its finished (or failed) calls
    program_attained: float = 0.0  # completed + folded progress of unfinished calls
    program_created_s: float = 0.0  # program arrival, epoch seconds
    program_wait_s: float = 0.0  # anti-starvation W_p
    program_run_s: float = 0.0  # anti-starvation T_p
    parents_base: list[float] | None = None  # exact ATLAS: each known parent's base ...
    parents_service: list[float] | None = None  # ... and attained service
    now_s: float = 0.0  # the database clock when loaded (one clock for every replica)
    prompt_ids_len: int | None = None  # prompt_token_ids given: how many
    prompt_chars: int = 0  # else: characters of the text prompt or of the messages' contents


_LOAD_CALLS = """
    SELECT c.id, c.program_id, c.thread_id, c.status, c.attempts, c.engine_id, c.level,
           c.priority, c.reply_to, c.request::text AS request_json, c.accepted_at,
           c.output_token_ids,
           p.service AS program_service, p.status AS program_status, p.engine_affinity,
           c.parent_ids, c.service, c.rank_base, c.tiebreak, c.aged,
           COALESCE(c.run_s, 0) AS run_s, c.control_seq,
           EXTRACT(EPOCH FROM c.accepted_at)::float8 AS accepted_s,
           p.total_service AS program_completed, p.attained AS program_attained,
           EXTRACT(EPOCH FROM p.created_at)::float8 AS program_created_s,
           p.starve_wait_s AS program_wait_s, p.starve_run_s AS program_run_s,
           par.base AS parents_base, par.service AS parents_service,
           EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now_s,
           CASE WHEN jsonb_typeof(c.request -> 'prompt_token_ids') = 'array'
                THEN jsonb_array_length(c.request -> 'prompt_token_ids') END AS prompt_ids_len,
           COALESCE(length(c.request ->> 'prompt'),
                    CASE WHEN jsonb_typeof(c.request -> 'messages') = 'array'
                         THEN (SELECT sum(length(m ->> 'content'))
                               FROM jsonb_array_elements(c.request -> 'messages') m) END,
                    0)::int AS prompt_chars
    FROM calls c JOIN programs p ON p.id = c.program_id
    LEFT JOIN LATERAL (
        SELECT array_agg(pc.priority) AS base, array_agg(pc.service) AS service FROM calls pc
        WHERE cardinality(c.parent_ids) > 0 AND pc.id = ANY(c.parent_ids)) par ON true
    WHERE c.id = ANY($1::text[])"""


def _call_row(row: asyncpg.Record) -> CallRow:
    return CallRow(*row)


async def load_call(conn: Conn, call_id: str) -> CallRow | None:
    rows = await conn.fetch(_LOAD_CALLS, [call_id])
    return _call_row(rows[0]) if rows else None


async def load_calls(conn: Conn, call_ids: Sequence[str]) -> dict[str, CallRow]:
    """Many calls in one round trip (the scheduler decides a batch of messages at once)."""
    rows = await conn.fetch(_LOAD_CALLS, list(call_ids))
    return {r["id"]: _call_row(r) for r in rows}


@dataclass(frozen=True, slots=True)
class DispatchItem:
    """One `queued → dispatched` transition a scheduler decided (see `mark_dispatched_many`)."""

    call_id: str
    attempt: int
    engine_id: str
    level: int
    priority: float  # the base it is issued with (ATLAS accounting)
    reason: str
    rank_base: float | None = None  # None: = priority
    tiebreak: float = 0.0
    aged: bool = False
    value: float | None = None  # its priority value at dispatch (for the event)
    program_id: str | None = None
    pin: str | None = None  # the program's engine pin after this decision (None: unchanged)
    restart: bool = False  # promoted at dispatch (paper's rule): W_c and T_c restart now


async def mark_dispatched_many(
    conn: Conn, items: Sequence[DispatchItem], *, actor: str
) -> dict[str, datetime]:
    """queued (attempts = k) → dispatched (attempts = k + 1) for a batch of calls, with their
    `dispatch` events and their programs' new engine pins: one statement, one round trip.

    Returns {call_id: dispatched_at} for the transitions that happened; a call missing from it
    was moved by someone else first (another replica, a redelivery) and must not be published.
    """
    if not items:
        return {}
    pins = {(i.program_id, i.pin) for i in items if i.pin is not None and i.program_id}
    rows = await conn.fetch(
        """WITH d AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::float8[],
                                    $6::float8[], $7::float8[], $8::bool[], $9::float8[],
                                    $10::text[], $12::bool[])
                   AS d(id, attempt, engine, level, priority, rank_base, tiebreak, aged, value,
                        reason, restart)),
           upd AS (
               UPDATE calls c SET status = 'dispatched', engine_id = d.engine, level = d.level,
                   priority = d.priority, rank_base = d.rank_base, tiebreak = d.tiebreak,
                   aged = d.aged, attempts = d.attempt + 1, dispatched_at = now(),
                   reset_at = CASE WHEN d.restart THEN now() ELSE c.reset_at END,
                   reset_run_s = CASE WHEN d.restart THEN COALESCE(c.run_s, 0)
                                      ELSE c.reset_run_s END
               FROM d WHERE c.id = d.id AND c.status = 'queued' AND c.attempts = d.attempt
               RETURNING c.id, c.dispatched_at, d.level, d.engine, d.value, d.reason),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value)
               SELECT id, 'dispatch', $11, level, engine, reason, value FROM upd)
           SELECT id, dispatched_at FROM upd""",
        [i.call_id for i in items],
        [i.attempt for i in items],
        [i.engine_id for i in items],
        [i.level for i in items],
        [i.priority for i in items],
        [i.priority if i.rank_base is None else i.rank_base for i in items],
        [i.tiebreak for i in items],
        [i.aged for i in items],
        [i.value for i in items],
        [i.reason for i in items],
        actor,
        [i.restart for i in items],
    )
    if pins:
        # a statement of its own: holding call rows while waiting for program rows would
        # invert the programs → calls lock order (see `fold_progress`); a lost pin is harmless
        await conn.execute(
            """UPDATE programs p SET engine_affinity = x.engine
               FROM unnest($1::text[], $2::text[]) AS x(pid, engine)
               WHERE p.id = x.pid AND p.engine_affinity IS DISTINCT FROM x.engine""",
            [p for p, _ in pins],
            [e for _, e in pins],
        )
    return {r["id"]: r["dispatched_at"] for r in rows}


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
    tiebreak: float = 0.0,
) -> datetime | None:
    """queued (attempts = attempt) → dispatched (attempts = attempt + 1), with its event.

    Returns dispatched_at, or None when someone else already made this transition.
    """
    done = await mark_dispatched_many(
        conn,
        [
            DispatchItem(
                call_id=call_id,
                attempt=attempt,
                engine_id=engine_id,
                level=level,
                priority=priority,
                reason=reason,
                tiebreak=tiebreak,
            )
        ],
        actor=actor,
    )
    return done.get(call_id)


# --------------------------------------------------------------------------- live service


@dataclass(frozen=True, slots=True)
class Progress:
    """One running call's progress as an engine reported it (a `CallProgress`)."""

    call_id: str
    engine_id: str
    service: float
    run_s: float
    program_id: str


@dataclass(frozen=True, slots=True)
class FoldedCall:
    """A call's state right after its progress was folded (the scheduler checks its level)."""

    id: str
    program_id: str
    thread_id: str
    engine_id: str
    delta: float
    service: float
    level: int
    rank_base: float
    aged: bool
    status: str
    tiebreak: float


async def fold_progress(conn: asyncpg.Connection, items: Sequence[Progress]) -> list[FoldedCall]:
    """Fold progress reports into call, program and thread service: one transaction, no lost
    update whoever runs it concurrently.

    Why it is safe with any number of scheduler replicas folding at once (and engines
    finishing calls meanwhile): a call's service only moves up (`GREATEST`, so a duplicate or
    stale report changes nothing); its increment (`delta`) is taken under the call's row lock, so
    two folders of one call see each other's result; programs and threads get `+ delta`, an
    atomic increment under their row locks. **Lock order** is programs → calls → threads, each
    in key order — the order every statement that touches more than one of them follows
    (`accept_call`, `finish_call`, `fail_call`) — so nothing can deadlock with a fold.
    Only the engine that owns the call may advance it (`engine_id` matches).
    """
    if not items:
        return []
    best: dict[str, Progress] = {}
    for it in items:  # several reports of one call in a batch: the furthest one counts
        cur = best.get(it.call_id)
        if cur is None or (it.service, it.run_s) > (cur.service, cur.run_s):
            best[it.call_id] = it
    ids = sorted(best)
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM programs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            sorted({best[i].program_id for i in ids}),
        )
        rows = await conn.fetch(
            """WITH r AS (
                   SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[],
                                        $6::text[])
                       AS r(id, engine, service, run_s, program)),
               l AS (
                   SELECT c.id, c.service AS old FROM calls c JOIN r ON r.id = c.id
                   WHERE c.engine_id = r.engine AND c.program_id = r.program
                     AND c.status = ANY($5::text[])
                   ORDER BY c.id FOR UPDATE OF c)
               UPDATE calls c SET service = GREATEST(c.service, r.service),
                                  run_s = GREATEST(COALESCE(c.run_s, 0), r.run_s)
               FROM l JOIN r ON r.id = l.id
               WHERE c.id = l.id AND c.status = ANY($5::text[])
               RETURNING c.id, c.program_id, c.thread_id, c.engine_id, c.service - l.old AS delta,
                         c.service, c.level, c.rank_base, c.aged, c.status, c.tiebreak""",
            ids,
            [best[i].engine_id for i in ids],
            [best[i].service for i in ids],
            [best[i].run_s for i in ids],
            list(ACTIVE),
            [best[i].program_id for i in ids],
        )
        folded = [FoldedCall(**dict(r)) for r in rows]
        per_program: dict[str, float] = {}
        per_thread: dict[tuple[str, str], float] = {}
        for f in folded:
            if f.delta > 0:
                per_program[f.program_id] = per_program.get(f.program_id, 0.0) + f.delta
                key = (f.program_id, f.thread_id)
                per_thread[key] = per_thread.get(key, 0.0) + f.delta
        if per_program:
            pids = sorted(per_program)
            await conn.execute(
                """UPDATE programs p SET attained = p.attained + d.delta
                   FROM unnest($1::text[], $2::float8[]) AS d(id, delta) WHERE p.id = d.id""",
                pids,
                [per_program[p] for p in pids],
            )
        if per_thread:
            tkeys = sorted(per_thread)
            await conn.execute(
                """WITH d AS (SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
                                 AS d(pid, tid, delta)),
                   l AS (SELECT t.program_id, t.thread_id FROM threads t
                         JOIN d ON d.pid = t.program_id AND d.tid = t.thread_id
                         ORDER BY t.program_id, t.thread_id FOR UPDATE OF t)
                   UPDATE threads t SET service = t.service + d.delta
                   FROM l JOIN d ON d.pid = l.program_id AND d.tid = l.thread_id
                   WHERE t.program_id = l.program_id AND t.thread_id = l.thread_id""",
                [k[0] for k in tkeys],
                [k[1] for k in tkeys],
                [per_thread[k] for k in tkeys],
            )
    return folded


@dataclass(frozen=True, slots=True)
class LevelChange:
    """A scheduler's decision to move an active call to another level (demote / promote)."""

    call_id: str
    from_level: int
    to_level: int
    reason: str
    value: float | None = None
    # promotions only
    restart: bool = False  # paper's rule: fresh quantum (rank_base = -service), reset W_c/T_c
    aged: bool | None = None  # age rule: sticky top queue
    tiebreak: float | None = None


@dataclass(frozen=True, slots=True)
class LevelChanged:
    id: str
    engine_id: str
    level: int
    control_seq: int
    tiebreak: float


async def change_levels(
    conn: Conn, changes: Sequence[LevelChange], *, kind: str, actor: str
) -> list[LevelChanged]:
    """Apply level changes conditionally (the call is still active, not aged, and still at
    `from_level`: a concurrent replica that already moved it makes ours match nothing), bump
    `control_seq` for the Control message, and record one `kind` event each (demote | promote)."""
    if not changes:
        return []
    rows = await conn.fetch(
        """WITH d AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::float8[],
                                    $6::bool[], $7::bool[], $8::float8[])
                   AS d(id, from_level, to_level, reason, value, restart, aged, tiebreak)),
           upd AS (
               UPDATE calls c SET level = d.to_level, control_seq = c.control_seq + 1,
                   rank_base = CASE WHEN d.restart THEN -c.service ELSE c.rank_base END,
                   reset_at = CASE WHEN d.restart THEN now() ELSE c.reset_at END,
                   reset_run_s = CASE WHEN d.restart THEN COALESCE(c.run_s, 0)
                                      ELSE c.reset_run_s END,
                   aged = COALESCE(d.aged, c.aged),
                   tiebreak = COALESCE(d.tiebreak, c.tiebreak)
               FROM d
               WHERE c.id = d.id AND c.level = d.from_level AND NOT c.aged
                 AND c.status = ANY($9::text[]) AND c.engine_id IS NOT NULL
               RETURNING c.id, c.engine_id, c.level, c.control_seq, c.tiebreak, d.reason,
                         d.value),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value)
               SELECT id, $10, $11, level, engine_id, reason, value FROM upd)
           SELECT id, engine_id, level, control_seq, tiebreak FROM upd""",
        [c.call_id for c in changes],
        [c.from_level for c in changes],
        [c.to_level for c in changes],
        [c.reason for c in changes],
        [c.value for c in changes],
        [c.restart for c in changes],
        [c.aged for c in changes],
        [c.tiebreak for c in changes],
        list(ACTIVE),
        kind,
        actor,
    )
    return [LevelChanged(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class StarvationRow:
    """A call the anti-starvation pass looks at, with its program's W_p and T_p."""

    id: str
    program_id: str
    engine_id: str
    status: str
    level: int
    service: float
    rank_base: float
    run_s: float
    reset_s: float  # epoch seconds W_c/T_c restarted (accepted or last promoted)
    reset_run_s: float
    program_created_s: float
    program_wait_s: float
    program_run_s: float
    now_s: float


async def starvation_candidates(
    conn: Conn, *, age_s: float | None, limit: int = 20_000
) -> list[StarvationRow]:
    """Calls the anti-starvation rules may promote: waiting below the top queue (the paper's
    ratio rule), and, with the age rule on, any waiting call of a program older than `age_s`
    (as in the simulator, a call is promoted while it waits, not while it runs).
    The rules themselves are applied by the caller (`autellix.policy.should_promote`)."""
    rows = await conn.fetch(
        """SELECT c.id, c.program_id, c.engine_id, c.status, c.level, c.service, c.rank_base,
                  COALESCE(c.run_s, 0) AS run_s,
                  EXTRACT(EPOCH FROM COALESCE(c.reset_at, c.accepted_at))::float8 AS reset_s,
                  c.reset_run_s,
                  EXTRACT(EPOCH FROM p.created_at)::float8 AS program_created_s,
                  p.starve_wait_s AS program_wait_s, p.starve_run_s AS program_run_s,
                  EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now_s
           FROM calls c JOIN programs p ON p.id = c.program_id
           WHERE NOT c.aged AND c.engine_id IS NOT NULL
             AND c.status IN ('dispatched', 'preempted')
             AND (c.level > 0
                  OR ($1::float8 IS NOT NULL
                      AND p.created_at < clock_timestamp() - make_interval(secs => $1)))
           LIMIT $2""",
        age_s,
        limit,
    )
    return [StarvationRow(**dict(r)) for r in rows]


# --------------------------------------------------------------------------- programs lifecycle


async def expire_idle_programs(conn: Conn, *, idle_s: float, limit: int = 1000) -> list[str]:
    """Open programs with no active call and no call or finish for `idle_s` become `expired`
    (the paper's stale-program cleanup); their rows keep the final statistics. A program whose
    row a frontend is updating right now (a new call) is skipped, not waited for."""
    rows = await conn.fetch(
        """WITH idle AS (
               SELECT p.id FROM programs p
               WHERE p.status = 'open'
                 AND COALESCE(p.last_call_at, p.created_at) < now() - make_interval(secs => $1)
                 AND COALESCE(p.last_finish_at, p.created_at) < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.program_id = p.id
                                 AND c.status NOT IN ('finished', 'failed'))
               ORDER BY p.id LIMIT $2 FOR UPDATE SKIP LOCKED)
           UPDATE programs p SET status = 'expired', closed_at = now(),
               calls_total = (SELECT count(*) FROM calls c WHERE c.program_id = p.id)
           FROM idle WHERE p.id = idle.id
           RETURNING p.id""",
        idle_s,
        limit,
    )
    return [r["id"] for r in rows]


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
        """WITH pl AS (  -- lock order programs → calls (see fold_progress)
               SELECT p.id FROM programs p JOIN calls c0 ON c0.program_id = p.id
               WHERE c0.id = $1 FOR UPDATE OF p),
           upd AS (
               UPDATE calls SET status = 'failed', error_code = $2, error_message = $3,
                                finished_at = now()
               FROM pl
               WHERE calls.id = $1 AND calls.program_id = pl.id AND status = ANY($5::text[])
                 AND ($6::int IS NULL OR attempts = $6)
                 AND ($7::text IS NULL OR engine_id = $7)
               RETURNING calls.id, calls.reply_to, calls.program_id, calls.service),
           prg AS (
               UPDATE programs SET last_finish_at = now(),
                   total_service = programs.total_service + upd.service
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
class CancelResult:
    """What `cancel_call` did. `cancelled`: this statement ended the call (`was` its status then,
    `reply_to` where its caller listens, `engine_id` / `control_seq` for the engine's Control).
    Otherwise `status` / `error_code` say how it had already ended; `call_id` None: unknown."""

    call_id: str | None
    cancelled: bool
    was: str | None = None
    reply_to: str | None = None
    engine_id: str | None = None
    control_seq: int = 0
    status: str | None = None
    error_code: str | None = None


async def cancel_call(
    conn: Conn,
    *,
    call_id: str | None = None,
    program_id: str | None = None,
    client_call_id: str | None = None,
    message: str,
    actor: str,
) -> CancelResult:
    """Cancel a call (by id, or by program + client_call_id): any non-terminal state → failed
    with `error_code = 'cancelled'`, in one conditional statement that also bumps `control_seq`
    (for the Control that stops its engine, as the schedulers' `change_levels` does), credits
    its attained service to the program (as `fail_call`) and writes its `fail` event.

    Why every state and not only queued: the row is the authority. Once it is failed the
    scheduler cannot dispatch it (`mark_dispatched_many` wants `queued`), an engine that has not
    started it finds it not its own at `mark_running`, and a running one cannot finish it
    (`finish_call` wants an active state); the Control only makes the engine stop at once."""
    row = await conn.fetchrow(
        """WITH tgt AS (
               SELECT c.id, c.program_id FROM calls c
               WHERE ($1::text IS NOT NULL AND c.id = $1)
                  OR ($1::text IS NULL AND c.program_id = $2 AND c.client_call_id = $3)),
           pl AS (  -- lock order programs → calls (see fold_progress)
               SELECT p.id FROM programs p JOIN tgt ON tgt.program_id = p.id FOR UPDATE OF p),
           old AS (
               SELECT c.id, c.status, c.engine_id FROM calls c
               JOIN tgt ON tgt.id = c.id JOIN pl ON pl.id = c.program_id
               WHERE c.status <> ALL($6::text[])
               FOR UPDATE OF c),
           upd AS (
               UPDATE calls SET status = 'failed', error_code = 'cancelled', error_message = $4,
                   finished_at = now(), control_seq = calls.control_seq + 1
               FROM old
               WHERE calls.id = old.id AND calls.status <> ALL($6::text[])
               RETURNING calls.id, calls.reply_to, calls.program_id, calls.service,
                         calls.control_seq, old.status AS was, old.engine_id),
           prg AS (
               UPDATE programs SET last_finish_at = now(),
                   total_service = programs.total_service + upd.service
               FROM upd WHERE programs.id = upd.program_id),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, engine_id, reason)
               SELECT id, 'fail', $5, engine_id, 'cancelled: ' || $4 FROM upd)
           SELECT tgt.id, upd.was, upd.reply_to, upd.engine_id, upd.control_seq
           FROM tgt LEFT JOIN upd ON upd.id = tgt.id""",
        call_id,
        program_id,
        client_call_id,
        message,
        actor,
        list(TERMINAL),
    )
    if row is None:
        return CancelResult(call_id=None, cancelled=False)
    if row["was"] is not None:
        return CancelResult(
            call_id=row["id"],
            cancelled=True,
            was=row["was"],
            reply_to=row["reply_to"],
            engine_id=row["engine_id"],
            control_seq=row["control_seq"],
            status="failed",
            error_code="cancelled",
        )
    # not ours to cancel: read how it ended (a fresh snapshot, after any concurrent end)
    now = await conn.fetchrow("SELECT status, error_code FROM calls WHERE id = $1", row["id"])
    return CancelResult(
        call_id=row["id"],
        cancelled=False,
        status=now["status"] if now else None,
        error_code=now["error_code"] if now else None,
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


async def mark_running_many(
    conn: Conn, engine_id: str, items: Sequence[tuple[str, int, int, float]]
) -> set[str]:
    """`mark_running` for many calls in one statement: (call_id, attempts, prompt_tokens,
    started_ago_s) each. Returns the ids this engine owns (those it moved to running).

    Why: the engine records starts in batches, off the critical path (see the engine runner's
    `_start_writer`), so a call's generation does not wait for this round trip and N calls that
    start together cost one statement. `started_at` is the database clock minus how long ago the
    engine started the segment, so it is not skewed by the batching delay. Call rows are locked
    in id order (as `fold_progress` does), so concurrent batches cannot deadlock.
    """
    if not items:
        return set()
    rows = await conn.fetch(
        """WITH d AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::float8[])
                   AS d(id, attempt, prompt_tokens, ago)),
           l AS (
               SELECT c.id FROM calls c JOIN d ON d.id = c.id
               WHERE c.attempts = d.attempt AND c.engine_id = $5
                 AND c.status IN ('dispatched', 'preempted')
               ORDER BY c.id FOR UPDATE OF c)
           UPDATE calls c SET status = 'running',
               started_at = COALESCE(c.started_at, now() - make_interval(secs => d.ago)),
               prompt_tokens = d.prompt_tokens
           FROM l JOIN d ON d.id = l.id
           WHERE c.id = l.id AND c.status IN ('dispatched', 'preempted')
           RETURNING c.id""",
        [i[0] for i in items],
        [i[1] for i in items],
        [i[2] for i in items],
        [max(0.0, float(i[3])) for i in items],
        engine_id,
    )
    return {r["id"] for r in rows}


async def mark_preempted(
    conn: Conn,
    *,
    call_id: str,
    attempts: int,
    engine_id: str,
    output_token_ids: list[int],
    level: int,
    reason: str,
    service: float | None = None,
    run_s: float | None = None,
    other_call_id: str | None = None,
) -> bool:
    """running → preempted with the tokens streamed so far (it resumes from them), its run
    time, and a `preempt` event naming the call it made room for. `level` is the engine's level
    for it (recorded in the event); `calls.level` stays the schedulers' field. `service` is only
    recorded in the event: the call's service column moves through `fold_progress` (the engine
    reports a preempted call's progress at once), so program and thread totals follow it."""
    got = await conn.fetchval(
        """WITH upd AS (
               UPDATE calls SET status = 'preempted', preemptions = preemptions + 1,
                                output_token_ids = $4, completion_tokens = cardinality($4::int[]),
                                run_s = GREATEST(COALESCE(run_s, 0), COALESCE($8, 0))
               WHERE id = $1 AND attempts = $2 AND engine_id = $3 AND status = 'running'
               RETURNING id, rank_base + GREATEST(service, COALESCE($7, service)) AS value),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value,
                                        other_call_id)
               SELECT id, 'preempt', $3, $5, $3, $6, value, $9 FROM upd)
           SELECT id FROM upd""",
        call_id,
        attempts,
        engine_id,
        output_token_ids,
        level,
        reason,
        service,
        run_s,
        other_call_id,
    )
    return got is not None


async def save_progress(
    conn: Conn, engine_id: str, items: Sequence[tuple[str, int, list[int]]]
) -> None:
    """Persist tokens generated so far for running calls (call_id, attempts, token_ids), so a
    call re-dispatched after its engine is lost resumes instead of starting over.

    Never backwards: an attempt's output only grows, but two saves of one call can be in flight
    on two connections at once (the periodic save and the hand-back's final one when a backend
    dies), and the older, shorter one may commit last. Had it won, the next engine would resume
    from the older point and replay tokens the caller already has."""
    if not items:
        return
    await conn.executemany(
        """UPDATE calls SET output_token_ids = $3, completion_tokens = cardinality($3::int[])
           WHERE id = $1 AND attempts = $2 AND engine_id = $4 AND status = 'running'
             AND coalesce(cardinality(output_token_ids), 0) <= cardinality($3::int[])""",
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
    started_ago_s: float | None = None,
) -> FinishedRow | None:
    """The one transition that answers a call: finished, program/thread totals, event.

    Program accounting, all atomic increments under the program's row lock (no lost update):
    `total_service` (PLAS: completed service) += the call's service; `attained` and the
    thread's service += what the folded progress reports had not yet added (`delta`, read under
    the call's row lock); `service` follows the ATLAS update `max(service, base + used)`
    (`autellix.policy.atlas_update`, done here in SQL so concurrent finishes cannot lose it);
    the anti-starvation totals W_p, T_p += the call's W_c, T_c since its last promotion;
    `waiting_s` += its whole time not running. Locks: program → call → thread, as in
    `fold_progress`.

    A call may finish straight from `dispatched` (its engine records starts in batches and a
    short call can end before its start was written): `started_ago_s` then gives `started_at`
    as the database clock minus that many seconds (None: now).
    """
    row = await conn.fetchrow(
        """WITH pl AS (
               SELECT p.id FROM programs p JOIN calls c0 ON c0.program_id = p.id
               WHERE c0.id = $1 FOR UPDATE OF p),
           old AS (
               SELECT c.id, c.service AS old_service FROM calls c JOIN pl ON pl.id = c.program_id
               WHERE c.id = $1 AND c.attempts = $2 AND c.engine_id = $3
                 AND c.status IN ('dispatched', 'running', 'preempted')
               FOR UPDATE OF c),
           c AS (
               UPDATE calls SET status = 'finished', finished_at = now(), prompt_tokens = $4,
                   completion_tokens = $5, cached_tokens = $6, service = $7,
                   run_s = GREATEST($8, COALESCE(calls.run_s, 0)),
                   finish_reason = $9, output_token_ids = $10,
                   started_at = COALESCE(started_at,
                                         now() - make_interval(secs => COALESCE($11::float8, 0))),
                   queue_s = GREATEST(0, EXTRACT(EPOCH FROM COALESCE(
                       started_at, now() - make_interval(secs => COALESCE($11::float8, 0)))
                       - accepted_at))
               FROM old
               WHERE calls.id = old.id AND calls.status IN ('dispatched', 'running', 'preempted')
               RETURNING calls.id, program_id, thread_id, reply_to, accepted_at, dispatched_at,
                         started_at, finished_at, queue_s, priority, level, preemptions,
                         rank_base, calls.run_s AS run_total,
                         $7 - old.old_service AS delta,
                         calls.run_s - reset_run_s AS tc,
                         EXTRACT(EPOCH FROM finished_at - COALESCE(reset_at, accepted_at))
                             - (calls.run_s - reset_run_s) AS wc,
                         EXTRACT(EPOCH FROM finished_at - accepted_at) - calls.run_s AS waited),
           p AS (
               UPDATE programs p SET calls_finished = p.calls_finished + 1,
                   prompt_tokens = p.prompt_tokens + $4,
                   completion_tokens = p.completion_tokens + $5,
                   total_service = p.total_service + $7,
                   attained = p.attained + c.delta,
                   service = GREATEST(p.service, c.priority + $7),
                   waiting_s = p.waiting_s + GREATEST(c.waited, 0),
                   run_s = p.run_s + c.run_total,
                   starve_wait_s = p.starve_wait_s + GREATEST(c.wc, 0),
                   starve_run_s = p.starve_run_s + GREATEST(c.tc, 0),
                   last_finish_at = now()
               FROM c WHERE p.id = c.program_id
               RETURNING p.id),
           t AS (
               UPDATE threads t SET service = t.service + c.delta
               FROM c JOIN p ON p.id = c.program_id
               WHERE t.program_id = c.program_id AND t.thread_id = c.thread_id),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value)
               SELECT id, 'finish', $3, level, $3, $9, rank_base + $7 FROM c)
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
        None if started_ago_s is None else max(0.0, float(started_ago_s)),
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


# --------------------------------------------------------------------------- explain


async def call_events(conn: Conn, call_id: str) -> list[dict[str, Any]]:
    """A call's decision history, oldest first (what `autellix calls explain` prints)."""
    rows = await conn.fetch(
        """SELECT id, at, kind, actor, level, engine_id, reason, value, other_call_id
           FROM call_events WHERE call_id = $1 ORDER BY at, id""",
        call_id,
    )
    return [dict(r) for r in rows]


async def find_calls(conn: Conn, prefix: str, limit: int = 5) -> list[str]:
    """Call ids starting with `prefix` (so a user may type a unique prefix)."""
    rows = await conn.fetch(
        "SELECT id FROM calls WHERE id LIKE $1 || '%' ORDER BY id LIMIT $2", prefix, limit
    )
    return [r["id"] for r in rows]


async def program_record(conn: Conn, program_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", program_id)
    return dict(row) if row else None


async def program_calls(conn: Conn, program_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """A program's calls in arrival order, with how many times each changed level."""
    rows = await conn.fetch(
        """SELECT c.id, c.thread_id, c.status, c.level, c.engine_id, c.service, c.priority,
                  c.preemptions, c.attempts, c.accepted_at, c.started_at, c.finished_at,
                  c.completion_tokens, c.prompt_tokens, c.cached_tokens, c.aged,
                  (SELECT count(*) FROM call_events e
                   WHERE e.call_id = c.id AND e.kind IN ('demote', 'promote'))::int AS moves
           FROM calls c WHERE c.program_id = $1 ORDER BY c.accepted_at, c.id LIMIT $2""",
        program_id,
        limit,
    )
    return [dict(r) for r in rows]
