"""Live service: running calls' progress folded into call, program and thread service.

PLAS ranks a new call by its program's attained service *including* calls still running, so
progress reports have to reach the program row while calls run, not only when they finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from autellix.store.states import ACTIVE


@dataclass(frozen=True, slots=True)
class Progress:
    """One running call's progress as an engine reported it (a `CallProgress`)."""

    call_id: str
    engine_id: str
    service: float
    run_s: float
    program_id: str


@dataclass(frozen=True, slots=True)
class FoldedCall:
    """A call's state right after its progress was folded (the scheduler checks its level)."""

    id: str
    program_id: str
    thread_id: str
    engine_id: str
    delta: float
    service: float
    level: int
    rank_base: float
    aged: bool
    status: str
    tiebreak: float


async def fold_progress(conn: asyncpg.Connection, items: Sequence[Progress]) -> list[FoldedCall]:
    """Fold progress reports into call, program and thread service: one transaction, no lost
    update whoever runs it concurrently.

    Why it is safe with any number of scheduler replicas folding at once (and engines
    finishing calls meanwhile): a call's service only moves up (`GREATEST`, so a duplicate or
    stale report changes nothing); its increment (`delta`) is taken under the call's row lock, so
    two folders of one call see each other's result; programs and threads get `+ delta`, an
    atomic increment under their row locks. **Lock order** is programs → calls → threads, each
    in key order — the order every statement that touches more than one of them follows
    (`accept_call`, `finish_call`, `fail_call`) — so nothing can deadlock with a fold.
    Only the engine that owns the call may advance it (`engine_id` matches).
    """
    if not items:
        return []
    best: dict[str, Progress] = {}
    for it in items:  # several reports of one call in a batch: the furthest one counts
        cur = best.get(it.call_id)
        if cur is None or (it.service, it.run_s) > (cur.service, cur.run_s):
            best[it.call_id] = it
    ids = sorted(best)
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM programs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            sorted({best[i].program_id for i in ids}),
        )
        rows = await conn.fetch(
            """WITH r AS (
                   SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[],
                                        $6::text[])
                       AS r(id, engine, service, run_s, program)),
               l AS (
                   SELECT c.id, c.service AS old FROM calls c JOIN r ON r.id = c.id
                   WHERE c.engine_id = r.engine AND c.program_id = r.program
                     AND c.status = ANY($5::text[])
                   ORDER BY c.id FOR UPDATE OF c)
               UPDATE calls c SET service = GREATEST(c.service, r.service),
                                  run_s = GREATEST(COALESCE(c.run_s, 0), r.run_s)
               FROM l JOIN r ON r.id = l.id
               WHERE c.id = l.id AND c.status = ANY($5::text[])
               RETURNING c.id, c.program_id, c.thread_id, c.engine_id, c.service - l.old AS delta,
                         c.service, c.level, c.rank_base, c.aged, c.status, c.tiebreak""",
            ids,
            [best[i].engine_id for i in ids],
            [best[i].service for i in ids],
            [best[i].run_s for i in ids],
            list(ACTIVE),
            [best[i].program_id for i in ids],
        )
        folded = [FoldedCall(**dict(r)) for r in rows]
        per_program: dict[str, float] = {}
        per_thread: dict[tuple[str, str], float] = {}
        for f in folded:
            if f.delta > 0:
                per_program[f.program_id] = per_program.get(f.program_id, 0.0) + f.delta
                key = (f.program_id, f.thread_id)
                per_thread[key] = per_thread.get(key, 0.0) + f.delta
        if per_program:
            pids = sorted(per_program)
            await conn.execute(
                """UPDATE programs p SET attained = p.attained + d.delta
                   FROM unnest($1::text[], $2::float8[]) AS d(id, delta) WHERE p.id = d.id""",
                pids,
                [per_program[p] for p in pids],
            )
        if per_thread:
            tkeys = sorted(per_thread)
            await conn.execute(
                """WITH d AS (SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
                                 AS d(pid, tid, delta)),
                   l AS (SELECT t.program_id, t.thread_id FROM threads t
                         JOIN d ON d.pid = t.program_id AND d.tid = t.thread_id
                         ORDER BY t.program_id, t.thread_id FOR UPDATE OF t)
                   UPDATE threads t SET service = t.service + d.delta
                   FROM l JOIN d ON d.pid = l.program_id AND d.tid = l.thread_id
                   WHERE t.program_id = l.program_id AND t.thread_id = l.thread_id""",
                [k[0] for k in tkeys],
                [k[1] for k in tkeys],
                [per_thread[k] for k in tkeys],
            )
    return folded
