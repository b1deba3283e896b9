"""Test data builders: a call accepted (and dispatched) in Postgres, a scheduler `CallRow`.

Why one module: the store tests and the scheduler tests set up the same states (a call accepted
for a program, then dispatched to an engine; a program-table row as the scheduler loads it), and
each used to spell out every column. A builder names what a test varies and defaults the rest, so
a column added to the store changes one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from autellix.store.accept import AcceptResult, accept_call, new_call_id
from autellix.store.dispatch import CallRow, mark_dispatched

#: a stored request the store never parses (the frontend validated it)
REQUEST_JSON = '{"v": 1, "prompt": "x"}'


async def accept(
    conn: Any,
    *,
    program_id: str,
    thread_id: str = "main",
    reply_to: str = "_INBOX.test",
    request_json: str = REQUEST_JSON,
    call_id: str | None = None,
    parent_ids: Sequence[str] = (),
) -> AcceptResult:
    """One call accepted for `program_id` (a fresh call id unless given), as the frontend does."""
    return await accept_call(
        conn,
        call_id=call_id or new_call_id(),
        program_id=program_id,
        thread_id=thread_id,
        client_call_id=None,
        parent_ids=list(parent_ids),
        reply_to=reply_to,
        request_json=request_json,
    )


async def dispatch(
    conn: Any,
    call_id: str,
    *,
    engine_id: str,
    level: int = 0,
    priority: float = 0.0,
    reason: str = "test",
) -> datetime:
    """Attempt 0 of an accepted call dispatched to `engine_id`, as the scheduler does; returns
    the call's accepted_at (the test fails when the store refused the dispatch)."""
    at = await mark_dispatched(
        conn,
        call_id=call_id,
        attempt=0,
        engine_id=engine_id,
        level=level,
        priority=priority,
        actor="test",
        reason=reason,
    )
    assert at is not None, f"{call_id} was not dispatched"
    return at


async def dispatched_call(
    conn: Any,
    *,
    program_id: str,
    engine_id: str,
    priority: float = 0.0,
    **accepted: Any,
) -> str:
    """A call accepted and dispatched to `engine_id` (`accepted`: keywords of `accept`); its id."""
    res = await accept(conn, program_id=program_id, **accepted)
    await dispatch(conn, res.call_id, engine_id=engine_id, priority=priority)
    return res.call_id


def call_row(**fields: Any) -> CallRow:
    """A queued call of an open program with no history, as the scheduler loads it; `fields`
    override any column."""
    base = CallRow(
        id="c-1",
        program_id="p",
        thread_id="main",
        status="queued",
        attempts=0,
        engine_id=None,
        level=0,
        priority=0.0,
        reply_to="_INBOX.x",
        request_json="{}",
        accepted_at=datetime.now(UTC),
        output_token_ids=None,
        program_service=0.0,
        program_status="open",
        engine_affinity=None,
        parent_ids=[],
    )
    return replace(base, **fields)
