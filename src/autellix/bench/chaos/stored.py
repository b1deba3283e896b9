"""The run's call rows as Postgres has them: the record the accounting checks the client's
view against (was a call stored, how it ended, which tokens its engine saved)."""

from __future__ import annotations

from typing import Any

__all__ = ["stored_calls"]


async def stored_calls(database_url: str, program_prefix: str) -> dict[str, dict[str, Any]]:
    """{client call id: row} for every call of the programs whose id starts with the prefix."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT id, program_id, client_call_id, status, output_token_ids, error_code,
                      completion_tokens
               FROM calls WHERE program_id LIKE $1 || '%'""",
            program_prefix,
        )
    finally:
        await conn.close()
    return {r["client_call_id"]: dict(r) for r in rows if r["client_call_id"]}
