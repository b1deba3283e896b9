"""A call's stored state for a caller that may have missed replies (`CallResume`).

One read, no write: a resume never changes a call, so any number of them (from a client that
reconnected, from the HTTP frontend's streams) cost one indexed lookup each. Always scoped to the
program: a call id from another program reads as no call at all.
"""

from __future__ import annotations

from typing import Any

from autellix.store.db import Conn


async def resume_record(
    conn: Conn, program_id: str, call_id: str | None, client_call_id: str | None
) -> dict[str, Any] | None:
    """The call's row (plus its engine's backend/model, to rebuild a final), by call id or by
    client call id within `program_id`; None when that program has no such call."""
    select = """SELECT c.*, e.backend AS engine_backend, e.model AS engine_model
                FROM calls c LEFT JOIN engines e ON e.id = c.engine_id WHERE c.program_id = $1"""
    # one statement per key, so each is planned on its own index (the primary key, or the
    # unique (program_id, client_call_id)) even with the frontend's generic plans
    if call_id is not None:
        row = await conn.fetchrow(f"{select} AND c.id = $2", program_id, call_id)
    else:
        row = await conn.fetchrow(f"{select} AND c.client_call_id = $2", program_id, client_call_id)
    return dict(row) if row else None
