"""Taking calls back: from a lost or stopping engine, or queued calls nobody published.

A requeued call keeps `attempts`, so its next dispatch is a new attempt and the old engine
owns nothing any more (see `autellix.store.states`). Requeues commit synchronously, as dispatch
transitions do (`store.dispatch.mark_dispatched_many` says why): the ScheduleCall published
after one is named by the attempt, so a requeue a Postgres crash took back must not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autellix.store.db import Conn
from autellix.store.states import ACTIVE


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
               ORDER BY id FOR UPDATE),  -- id order, as every multi-call statement
           upd AS (
               UPDATE calls c SET status = 'queued', engine_id = NULL
               FROM old WHERE c.id = old.id
               RETURNING c.id, c.program_id, c.reply_to, c.attempts, old.engine_id AS old_engine),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, engine_id, reason)
               SELECT id, 'requeue', $2, old_engine, $3 FROM upd)
           SELECT * FROM upd
           WHERE set_config('synchronous_commit', 'on', true) IS NOT NULL""",
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
           SELECT * FROM upd
           WHERE set_config('synchronous_commit', 'on', true) IS NOT NULL""",
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
