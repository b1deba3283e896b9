"""The frontend's side of a call: register program, thread and call in one statement.

A call exists from here on: the frontend answers `accepted` only after this commits, which is
what makes "accepted ⇒ answered" hold (see `autellix.store.states`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from autellix.store.db import Conn


def new_call_id() -> str:
    """Time-ordered (ms) + 64 random bits: sorts by arrival in logs, never collides in practice."""
    return f"c-{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class AcceptResult:
    call_id: str
    duplicate: bool
    program_closed: bool = False
    status: str = "queued"  # of the existing call when duplicate
    #: the program exists but belongs to another tenant (or to none): answer as if unknown
    not_owned: bool = False


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
    tenant: str | None = None,
) -> AcceptResult:
    """Register program (auto-created while open), thread and call: one statement, one commit.

    `tenant`: the caller's (an HTTP API key's). A program it creates is stored as that
    tenant's; an existing one is used only if it is that tenant's (`not_owned` otherwise), in
    the same statement, so no other tenant can create the program in between. None: no tenant
    (NATS, an HTTP API without keys): any program may be used, a new one has no tenant.

    The program upsert takes the program's row lock until commit, so a concurrent close either
    happens before (the upsert's `WHERE status = 'open'` fails: we report it closed) or waits
    for us. A duplicate `client_call_id` inserts nothing (the unique constraint) and returns the
    existing call's id. `programs.calls_total` is not touched here (it would be a second update
    of the program row in one statement); `close_program` / `get_program` count the calls.
    """
    row = await conn.fetchrow(
        """WITH prog AS (
               INSERT INTO programs (id, last_call_at, tenant) VALUES ($2, now(), $8)
               ON CONFLICT (id) DO UPDATE SET last_call_at = now()
                   WHERE programs.status = 'open'
                     AND ($8::text IS NULL OR programs.tenant = $8::text)
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
        tenant,
    )
    if row["program"] is None:  # closed, or not this tenant's: the rare path, one more read
        if tenant is not None:
            owner = await conn.fetchval("SELECT tenant FROM programs WHERE id = $1", program_id)
            if owner != tenant:  # another tenant's, closed or not: nothing about it is told
                return AcceptResult(call_id="", duplicate=False, not_owned=True)
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
