"""The live `gittins` policy's index tables, rebuilt from Postgres history at a bounded rate.

Every decision reads `GittinsTable.tables` (an immutable snapshot: a bisect per lookup); a
background task replaces it at most every `interval_s` seconds from one query over the newest
finished programs (`autellix.store.gittins.finished_programs`), so a replica never scans history
per call. Replicas refresh independently from the same rows and so converge on the same tables.

Hints are read per call (`autellix.hint` in the call's metadata); live, a hint bucket uses its
warm-up prior (the hint at face value), since checking hints against outcomes needs the hint
recorded per call (the simulator learns it: `autellix.sim.learning`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from autellix.policy.gittins import GittinsConfig, GittinsHistory, GittinsTables, empty_tables
from autellix.store.gittins import FinishedProgram, finished_programs

DEFAULT_REFRESH_S = 5.0


def history_tables(rows: list[FinishedProgram], cfg: GittinsConfig) -> GittinsTables:
    """Tables from finished programs (newest first, as the query returns them)."""
    hist = GittinsHistory(cfg)
    for r in reversed(rows):  # oldest first, so the windows keep the newest
        size = r.total_service if cfg.attained == "plas" else r.critical_service
        hist.add(r.program_class, size, r.output_tokens)
    return hist.tables()


class GittinsTable:
    """The current tables of one scheduler replica, and the loop that refreshes them."""

    def __init__(self, cfg: GittinsConfig, *, interval_s: float = DEFAULT_REFRESH_S) -> None:
        self.cfg = cfg
        self.interval_s = interval_s
        self.tables: GittinsTables = empty_tables(cfg)
        self.refreshed_at = 0.0
        self.refreshes = 0

    async def refresh(self, pool: Any) -> GittinsTables:
        """Rebuild from the newest finished programs now."""
        async with pool.acquire() as conn:
            rows = await finished_programs(conn, limit=self.cfg.window)
        self.tables = history_tables(rows, self.cfg)
        self.refreshed_at = time.monotonic()
        self.refreshes += 1
        return self.tables

    async def run(self, pool: Any, log: Any) -> None:
        """Refresh every `interval_s` until cancelled; a failed refresh keeps the old tables."""
        while True:
            try:
                await self.refresh(pool)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gittins table refresh failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)
