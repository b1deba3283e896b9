"""Postgres write counters of one database: commits and rows inserted, updated or deleted.

`pg_stat_database.xact_commit` counts transactions (a batched heartbeat is one, however many
rows it writes); `pg_stat_user_tables` n_tup_ins + n_tup_upd + n_tup_del counts rows written.
Both are cumulative; a window's rate is the difference of two snapshots over its length.
Backends report their counters when a transaction ends (at most about once a second while
busy), so a snapshot lags by up to a second: windows are several seconds long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from autellix.runtime.settings import asyncpg_dsn


@dataclass(frozen=True)
class PgCounters:
    at: float  # monotonic seconds
    commits: int
    rows: int

    def rates(self, later: PgCounters) -> dict[str, float]:
        """Commits/s and rows written/s between this snapshot and `later`."""
        dt = max(1e-9, later.at - self.at)
        return {
            "commits_per_s": (later.commits - self.commits) / dt,
            "rows_written_per_s": (later.rows - self.rows) / dt,
        }


async def pg_counters(database_url: str) -> PgCounters:
    """A snapshot of the database `database_url` names (through its own connection)."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        commits = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        rows = await conn.fetchval(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        )
    finally:
        await conn.close()
    return PgCounters(at=time.monotonic(), commits=int(commits or 0), rows=int(rows or 0))
