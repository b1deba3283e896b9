"""What a live run left in Postgres: engine busy time, preemptions, the decisions taken.

The client sees each call's result; the program table and the call events see the rest (which
engine was busy when, how often calls were preempted, promoted or demoted). Read once per run,
after it finished, with plain SQL on the run's own database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from autellix.runtime.settings import asyncpg_dsn


@dataclass
class RunDbStats:
    """Per-run numbers from Postgres (times in seconds)."""

    calls: int = 0
    preemptions: int = 0
    engine_busy_s: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0  # first accepted → last finished
    events: dict[str, int] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)  # final level of each call

    def utilization(self, engine_ids: list[str]) -> list[float]:
        """Busy fraction of each engine over the window (engines that served nothing: 0)."""
        w = max(1e-9, self.window_s)
        return [min(1.0, self.engine_busy_s.get(e, 0.0) / w) for e in engine_ids]


def _union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Total length of the union of [start, end] intervals (an engine busy with ≥1 call)."""
    total = 0.0
    cur_s: datetime | None = None
    cur_e: datetime | None = None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += (cur_e - cur_s).total_seconds()
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_e is not None and cur_s is not None:
        total += (cur_e - cur_s).total_seconds()
    return total


async def run_db_stats(database_url: str, program_prefix: str) -> RunDbStats:
    """Stats of the calls of programs whose id starts with `program_prefix`."""
    import asyncpg

    like = program_prefix.replace("%", r"\%").replace("_", r"\_") + "%"
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT engine_id, accepted_at, started_at, finished_at, preemptions, level "
            "FROM calls WHERE program_id LIKE $1",
            like,
        )
        events = await conn.fetch(
            "SELECT e.kind, count(*) AS n FROM call_events e JOIN calls c ON c.id = e.call_id "
            "WHERE c.program_id LIKE $1 GROUP BY e.kind",
            like,
        )
    finally:
        await conn.close()
    out = RunDbStats(calls=len(rows))
    by_engine: dict[str, list[tuple[datetime, datetime]]] = {}
    accepted = [r["accepted_at"] for r in rows if r["accepted_at"] is not None]
    finished = [r["finished_at"] for r in rows if r["finished_at"] is not None]
    for r in rows:
        out.preemptions += int(r["preemptions"] or 0)
        lvl = str(r["level"])
        out.levels[lvl] = out.levels.get(lvl, 0) + 1
        if r["engine_id"] and r["started_at"] and r["finished_at"]:
            by_engine.setdefault(r["engine_id"], []).append((r["started_at"], r["finished_at"]))
    out.engine_busy_s = {e: _union_seconds(iv) for e, iv in by_engine.items()}
    if accepted and finished:
        out.window_s = max(0.0, (max(finished) - min(accepted)).total_seconds())
    out.events = {r["kind"]: int(r["n"]) for r in events}
    return out


def as_dict(stats: RunDbStats) -> dict[str, Any]:
    return {
        "calls": stats.calls,
        "preemptions": stats.preemptions,
        "window_s": stats.window_s,
        "events": stats.events,
        "final_levels": stats.levels,
    }
