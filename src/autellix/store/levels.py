"""Moving active calls between MLFQ levels: demotion, promotion and its candidates.

The rules themselves are pure (`autellix.policy`); this module applies their outcome
conditionally and finds the calls the anti-starvation pass has to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autellix.store.db import Conn
from autellix.store.states import ACTIVE


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
           l AS (  -- call rows locked in id order, as every multi-call statement does
               SELECT c.id FROM calls c JOIN d ON d.id = c.id
               WHERE c.level = d.from_level AND NOT c.aged
                 AND c.status = ANY($9::text[]) AND c.engine_id IS NOT NULL
               ORDER BY c.id FOR UPDATE OF c),
           upd AS (
               UPDATE calls c SET level = d.to_level, control_seq = c.control_seq + 1,
                   rank_base = CASE WHEN d.restart THEN -c.service ELSE c.rank_base END,
                   reset_at = CASE WHEN d.restart THEN now() ELSE c.reset_at END,
                   reset_run_s = CASE WHEN d.restart THEN COALESCE(c.run_s, 0)
                                      ELSE c.reset_run_s END,
                   aged = COALESCE(d.aged, c.aged),
                   tiebreak = COALESCE(d.tiebreak, c.tiebreak)
               FROM l JOIN d ON d.id = l.id
               WHERE c.id = l.id AND c.level = d.from_level AND NOT c.aged
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
