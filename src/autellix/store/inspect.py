"""Read-only views for tools (`autellix calls explain`, replay of a stored result)."""

from __future__ import annotations

from typing import Any

from autellix.store.db import Conn


async def call_record(conn: Conn, call_id: str) -> dict[str, Any] | None:
    """A call's whole row plus its engine's backend/model (to replay a stored result)."""
    row = await conn.fetchrow(
        """SELECT c.*, e.backend AS engine_backend, e.model AS engine_model
           FROM calls c LEFT JOIN engines e ON e.id = c.engine_id WHERE c.id = $1""",
        call_id,
    )
    return dict(row) if row else None


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
