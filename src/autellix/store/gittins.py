"""The history the live `gittins` policy learns from: finished programs' service, output and class.

One read per refresh (the scheduler's `GittinsTable` calls it at a bounded rate), never per
call: the newest `limit` closed or expired programs, by when they closed. A program's class is
the `autellix.class` key of its ProgramOpen metadata, else of its first call's metadata (the
SDK and the HTTP API may label either).
"""

from __future__ import annotations

from dataclasses import dataclass

from autellix.store.db import Conn

CLASS_KEY = "autellix.class"  # metadata key of a program's class (e.g. the agent's name)
HINT_KEY = "autellix.hint"  # metadata key of a call's hint: expected remaining output tokens


@dataclass(frozen=True, slots=True)
class FinishedProgram:
    """What one finished program tells the index: its class, service totals and output."""

    program_class: str | None
    total_service: float  # PLAS: every call's service
    critical_service: float  # ATLAS: the longest critical path
    output_tokens: int


async def finished_programs(conn: Conn, *, limit: int) -> list[FinishedProgram]:
    """The newest `limit` finished programs with any service."""
    rows = await conn.fetch(
        """SELECT COALESCE(p.meta->>$2,
                           (SELECT c.request->'metadata'->>$2 FROM calls c
                            WHERE c.program_id = p.id ORDER BY c.accepted_at LIMIT 1)) AS cls,
                  p.total_service, p.service, p.completion_tokens
           FROM programs p
           WHERE p.status IN ('closed', 'expired') AND p.total_service > 0
           ORDER BY p.closed_at DESC NULLS LAST LIMIT $1""",
        limit,
        CLASS_KEY,
    )
    return [
        FinishedProgram(
            program_class=r["cls"],
            total_service=float(r["total_service"]),
            critical_service=float(r["service"]),
            output_tokens=int(r["completion_tokens"]),
        )
        for r in rows
    ]
