"""Read-only queries behind the frontend's live dashboard (`/ui`): bounded, indexed, one snapshot.

Why bounded and indexed: the dashboard polls these while a browser is open, on the same Postgres
the calls are admitted through, so each statement must cost the same however long the deployment
has run. Every statement is capped by a LIMIT and reaches rows through an index:

* calls of the time window by primary key: call ids start with their arrival time in hex
  milliseconds (`autellix.store.accept.new_call_id`), so "accepted in the last N seconds" is a
  range scan of the primary key, with no index on `accepted_at` needed; active calls (whatever
  their age) through `ix_calls_status_engine`;
* their decisions through `ix_call_events_call`, for those call ids only;
* programs by id (those of the window's calls) plus the open ones through
  `ix_programs_open_last_call`;
* engines: one row each.

All of it runs in one read-only transaction (one consistent snapshot, and the database clock as
`now`) with a statement timeout, so a slow dashboard can never hold a connection long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from autellix.store.states import ACTIVE

#: decisions the dashboard draws: preemptions, level moves, hand-backs after an engine loss, errors
DRAWN_EVENTS = ("preempt", "requeue", "demote", "promote", "fail")

#: a dashboard statement that takes longer than this is cut off (the next poll tries again)
STATEMENT_TIMEOUT_MS = 2000


@dataclass(frozen=True, slots=True)
class WindowLimits:
    """How much one snapshot may read: the time window and the row caps."""

    window_s: float = 300.0
    max_calls: int = 500
    max_programs: int = 300
    max_events: int = 5000


@dataclass(slots=True)
class WindowRows:
    """One consistent read of what the dashboard shows (rows as dicts, times as datetimes)."""

    now: datetime
    engines: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)
    depth: list[dict[str, Any]] = field(default_factory=list)
    calls_truncated: bool = False


_CALL_COLUMNS = """id, program_id, thread_id, client_call_id, parent_ids, status, level, engine_id,
    attempts, preemptions, accepted_at, dispatched_at, started_at, finished_at, prompt_tokens,
    completion_tokens, cached_tokens, service, queue_s, run_s, finish_reason, error_code, aged"""


async def read_window(pool: asyncpg.Pool, limits: WindowLimits) -> WindowRows:
    """Everything one dashboard snapshot needs, read in one read-only transaction on a connection
    borrowed from `pool` for just these few statements."""
    async with pool.acquire() as c:
        async with c.transaction(readonly=True):
            await c.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
            now: datetime = await c.fetchval("SELECT now()")
            rows = WindowRows(now=now)
            rows.engines = await _engines(c)
            rows.calls, rows.calls_truncated = await _calls(c, limits)
            ids = [r["id"] for r in rows.calls]
            rows.events = await _events(c, ids, limits.max_events)
            program_ids = sorted({r["program_id"] for r in rows.calls})
            rows.programs = await _programs(c, program_ids, limits)
            rows.depth = await queue_depth(c)
            return rows


async def _engines(c: Any) -> list[dict[str, Any]]:
    rows = await c.fetch(
        """SELECT id, backend, model, status, max_batch, running, waiting, kv_cache_usage,
                  started_at, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age_s
           FROM engines ORDER BY id LIMIT 200"""
    )
    return [dict(r) for r in rows]


async def _calls(c: Any, limits: WindowLimits) -> tuple[list[dict[str, Any]], bool]:
    """Calls accepted within the window (newest first, capped) plus every active call."""
    recent = await c.fetch(
        f"""SELECT {_CALL_COLUMNS} FROM calls
            WHERE id LIKE 'c-%' AND id >= 'c-' || lpad(to_hex(
                (EXTRACT(EPOCH FROM now()) * 1000)::bigint - $1::bigint), 12, '0')
            ORDER BY id DESC LIMIT $2""",
        int(limits.window_s * 1000),
        limits.max_calls + 1,
    )
    truncated = len(recent) > limits.max_calls
    out = {r["id"]: dict(r) for r in recent[: limits.max_calls]}
    active = await c.fetch(
        f"""SELECT {_CALL_COLUMNS} FROM calls WHERE status = ANY($1::text[])
            ORDER BY id DESC LIMIT $2""",
        ["queued", *ACTIVE],
        limits.max_calls,
    )
    for r in active:
        out.setdefault(r["id"], dict(r))
    return sorted(out.values(), key=lambda r: r["id"]), truncated


async def _events(c: Any, call_ids: list[str], limit: int) -> list[dict[str, Any]]:
    if not call_ids:
        return []
    rows = await c.fetch(
        """SELECT call_id, at, kind, level, engine_id, reason, value, other_call_id
           FROM call_events WHERE call_id = ANY($1::text[]) AND kind = ANY($2::text[])
           ORDER BY at, id LIMIT $3""",
        call_ids,
        list(DRAWN_EVENTS),
        limit,
    )
    return [dict(r) for r in rows]


async def _programs(c: Any, ids: list[str], limits: WindowLimits) -> list[dict[str, Any]]:
    """The window's calls' programs, plus open programs that called within the window."""
    rows = await c.fetch(
        """SELECT id, status, created_at, closed_at, last_call_at, last_finish_at, service,
                  total_service, attained, waiting_s, run_s, calls_total, calls_finished,
                  prompt_tokens, completion_tokens, engine_affinity, meta, tenant
           FROM programs WHERE id = ANY($1::text[])
           UNION
           SELECT id, status, created_at, closed_at, last_call_at, last_finish_at, service,
                  total_service, attained, waiting_s, run_s, calls_total, calls_finished,
                  prompt_tokens, completion_tokens, engine_affinity, meta, tenant
           FROM programs
           WHERE status = 'open' AND last_call_at > now() - make_interval(secs => $2)
           ORDER BY created_at DESC LIMIT $3""",
        ids,
        limits.window_s,
        limits.max_programs,
    )
    return [dict(r) for r in rows]


async def queue_depth(c: Any) -> list[dict[str, Any]]:
    """Unfinished calls now, per engine, level and state (queued ones have no engine yet)."""
    rows = await c.fetch(
        """SELECT engine_id, level, status, count(*)::int AS n FROM calls
           WHERE status = ANY($1::text[]) GROUP BY engine_id, level, status""",
        ["queued", *ACTIVE],
    )
    return [dict(r) for r in rows]
