"""The engines table: registration, heartbeats, and finding the live and the lost ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autellix.store.db import Conn
from autellix.store.states import ACTIVE


@dataclass(frozen=True, slots=True)
class EngineRow:
    id: str
    backend: str
    model: str
    status: str
    max_batch: int
    running: int
    waiting: int
    kv_cache_usage: float
    age_s: float


async def register_engine(
    conn: Conn, *, engine_id: str, backend: str, model: str, max_batch: int, meta: dict[str, Any]
) -> None:
    await conn.execute(
        """INSERT INTO engines (id, backend, model, status, max_batch, meta)
           VALUES ($1, $2, $3, 'up', $4, $5::jsonb)
           ON CONFLICT (id) DO UPDATE SET backend = $2, model = $3, status = 'up',
               max_batch = $4, meta = $5::jsonb, started_at = now(), heartbeat_at = now(),
               running = 0, waiting = 0""",
        engine_id,
        backend,
        model,
        max_batch,
        json.dumps(meta),
    )


@dataclass(frozen=True, slots=True)
class Beat:
    """One engine's heartbeat figures, as the `engines` row keeps them."""

    engine_id: str
    running: int
    waiting: int
    kv_cache_usage: float


async def engine_heartbeats(conn: Conn, beats: list[Beat]) -> None:
    """Every engine of one process in one statement (a light host runs a thousand): Postgres
    sees one transaction per heartbeat interval per process, not one per engine. Rows are
    written in id order, as every multi-row statement here locks them."""
    if not beats:
        return
    beats = sorted(beats, key=lambda b: b.engine_id)
    await conn.execute(
        """UPDATE engines e SET heartbeat_at = now(), status = 'up', running = h.running,
                                waiting = h.waiting, kv_cache_usage = h.kv
           FROM unnest($1::text[], $2::int[], $3::int[], $4::float8[])
                AS h(id, running, waiting, kv)
           WHERE e.id = h.id""",
        [b.engine_id for b in beats],
        [b.running for b in beats],
        [b.waiting for b in beats],
        [b.kv_cache_usage for b in beats],
    )


async def set_engine_status(conn: Conn, engine_id: str, status: str) -> None:
    await conn.execute("UPDATE engines SET status = $2 WHERE id = $1", engine_id, status)


async def live_engines(conn: Conn, *, stale_after_s: float) -> list[EngineRow]:
    rows = await conn.fetch(
        """SELECT id, backend, model, status, max_batch, running, waiting, kv_cache_usage,
                  EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age_s
           FROM engines
           WHERE status = 'up' AND heartbeat_at > now() - make_interval(secs => $1)""",
        stale_after_s,
    )
    return [EngineRow(**dict(r)) for r in rows]


async def mark_stale_engines_down(conn: Conn, *, stale_after_s: float) -> list[str]:
    rows = await conn.fetch(
        """UPDATE engines SET status = 'down'
           WHERE status = 'up' AND heartbeat_at < now() - make_interval(secs => $1)
           RETURNING id""",
        stale_after_s,
    )
    return [r["id"] for r in rows]


async def mark_engines_down_if_stale(
    conn: Conn, engine_ids: list[str], *, stale_after_s: float
) -> list[str]:
    """`mark_stale_engines_down` for the named engines only, with their own (shorter)
    threshold: engines a scheduler already suspects (nobody subscribed to their direct
    subject). Rows in id order, as every multi-row statement here locks them."""
    if not engine_ids:
        return []
    rows = await conn.fetch(
        """UPDATE engines SET status = 'down'
           WHERE id = ANY($1::text[]) AND status = 'up'
             AND heartbeat_at < now() - make_interval(secs => $2)
           RETURNING id""",
        sorted(engine_ids),
        stale_after_s,
    )
    return [r["id"] for r in rows]


async def down_engines_with_calls(conn: Conn) -> list[str]:
    """Engines marked down that still own active calls (a reaper that died half-way)."""
    rows = await conn.fetch(
        """SELECT DISTINCT c.engine_id FROM calls c JOIN engines e ON e.id = c.engine_id
           WHERE e.status = 'down' AND c.status = ANY($1::text[])""",
        list(ACTIVE),
    )
    return [r["engine_id"] for r in rows]
