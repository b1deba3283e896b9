"""A program's row: opened, closed, read, and expired when idle.

The program table is what PLAS/ATLAS rank by; its service totals are *written* by the
statements that end or advance calls (`finish`, `progress`), this module only manages the
program's own lifecycle (open → closed | expired) and reads the row back.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import asyncpg

from autellix.store.db import Conn


def new_program_id() -> str:
    return f"p-{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


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


# `tenant` below is the caller's (an HTTP API key's): a program is only found when it is that
# tenant's, exactly as if another tenant's did not exist. None: no tenant (NATS, an HTTP API
# without keys), every program is found.
_OWNED = "($2::text IS NULL OR tenant = $2::text)"


async def open_program(
    conn: Conn, program_id: str, meta: dict[str, str], tenant: str | None = None
) -> ProgramRow | None:
    """Create the program if new (as `tenant`'s); return its row either way (a closed one stays
    closed). None: it exists and is not `tenant`'s."""
    row = await conn.fetchrow(
        f"""INSERT INTO programs (id, meta, tenant) VALUES ($1, $3::jsonb, $2)
            ON CONFLICT (id) DO UPDATE SET meta = programs.meta
                WHERE $2::text IS NULL OR programs.tenant = $2::text
            RETURNING {_PROGRAM_COLS_LIVE}""",
        program_id,
        tenant,
        json.dumps(meta),
    )
    return _program(row) if row else None


async def close_program(
    conn: Conn, program_id: str, tenant: str | None = None
) -> ProgramRow | None:
    """Close the program; None when it does not exist (or is not `tenant`'s)."""
    row = await conn.fetchrow(
        f"""UPDATE programs SET status = CASE WHEN status = 'open' THEN 'closed' ELSE status END,
                closed_at = COALESCE(closed_at, now()),
                calls_total = (SELECT count(*) FROM calls c WHERE c.program_id = programs.id)
            WHERE id = $1 AND {_OWNED} RETURNING {_PROGRAM_COLS}""",
        program_id,
        tenant,
    )
    return _program(row) if row else None


async def get_program(conn: Conn, program_id: str, tenant: str | None = None) -> ProgramRow | None:
    row = await conn.fetchrow(
        f"SELECT {_PROGRAM_COLS_LIVE} FROM programs WHERE id = $1 AND {_OWNED}",
        program_id,
        tenant,
    )
    return _program(row) if row else None


async def owned_by_another(conn: Conn, program_id: str, tenant: str) -> bool:
    """Whether the program exists and is not `tenant`'s (for the log of a refused request)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM programs WHERE id = $1 AND tenant IS DISTINCT FROM $2)",
            program_id,
            tenant,
        )
    )


async def program_status(conn: Conn, program_id: str, tenant: str | None = None) -> str | None:
    """The program's status, or None when it does not exist (or is not `tenant`'s)."""
    got = await conn.fetchval(
        f"SELECT status FROM programs WHERE id = $1 AND {_OWNED}", program_id, tenant
    )
    return str(got) if got is not None else None


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
