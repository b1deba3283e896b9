"""The scheduler's side of a call: load what a decision needs, then `queued → dispatched`.

`load_calls` reads a batch of calls with their program rows (the paper's program table) in
one round trip; `mark_dispatched_many` records a batch of decisions in one statement, and its
answer says which transitions were this replica's to publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from autellix.store.db import Conn


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
    logprobs_json: str | None = None  # output_logprobs as written (0005), for a resume


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
                    0)::int AS prompt_chars,
           c.output_logprobs::text AS logprobs_json
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

    Committed synchronously (`set_config` in the statement, `store.finish` says how): the
    Dispatch goes out right after, under the message id `<call>:<attempt>`. A transition a
    Postgres crash took back left the call `queued` at the same attempt, so its next dispatch
    reused that id and was dropped as a duplicate (by JetStream's window, by the engine's
    (call, attempt) memory) while the row said `dispatched`: accepted, never answered
    (`autellix chaos`, Postgres fault). One WAL flush per batch of decisions.
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
           l AS (  -- call rows locked in id order, as every multi-call statement does
               SELECT c.id FROM calls c JOIN d ON d.id = c.id
               WHERE c.status = 'queued' AND c.attempts = d.attempt
               ORDER BY c.id FOR UPDATE OF c),
           upd AS (
               UPDATE calls c SET status = 'dispatched', engine_id = d.engine, level = d.level,
                   priority = d.priority, rank_base = d.rank_base, tiebreak = d.tiebreak,
                   aged = d.aged, attempts = d.attempt + 1, dispatched_at = now(),
                   reset_at = CASE WHEN d.restart THEN now() ELSE c.reset_at END,
                   reset_run_s = CASE WHEN d.restart THEN COALESCE(c.run_s, 0)
                                      ELSE c.reset_run_s END
               FROM l JOIN d ON d.id = l.id
               WHERE c.id = l.id AND c.status = 'queued' AND c.attempts = d.attempt
               RETURNING c.id, c.dispatched_at, d.level, d.engine, d.value, d.reason),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value)
               SELECT id, 'dispatch', $11, level, engine, reason, value FROM upd)
           SELECT id, dispatched_at FROM upd
           WHERE set_config('synchronous_commit', 'on', true) IS NOT NULL""",
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
        # invert the programs → calls lock order (see `fold_progress`); program rows locked in
        # id order, as every statement that locks several does; a lost pin is harmless
        ordered = sorted(dict(pins).items())
        await conn.execute(
            """WITH x AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x(pid, engine)),
                    l AS (SELECT p.id FROM programs p JOIN x ON x.pid = p.id
                          WHERE p.engine_affinity IS DISTINCT FROM x.engine
                          ORDER BY p.id FOR UPDATE OF p)
               UPDATE programs p SET engine_affinity = x.engine
               FROM l JOIN x ON x.pid = l.id
               WHERE p.id = l.id AND p.engine_affinity IS DISTINCT FROM x.engine""",
            [p for p, _ in ordered],
            [e for _, e in ordered],
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
