"""Database connections: an asyncpg pool for the services' hot path, SQLAlchemy for everything else.

Why two: the services run a handful of fixed statements per call (see `queries.py`), each a
single round trip with a conditional `UPDATE ... WHERE status IN (...)`; raw asyncpg with
prepared statements keeps that at the ~0.2 ms a local round trip costs, where the SQLAlchemy
async ORM adds several times that. Tools, tests and migrations use SQLAlchemy (`create_engine`)
with the same models.

**Commit durability** (`AUTELLIX_PG_SYNC_COMMIT`: `accept` (default) | `on` | `off`). A synchronous
commit waits for the WAL fsync: ~4 ms per commit on this machine's disk against ~0.15 ms without,
and a call makes four commits (accept, dispatch, start, finish). Only the frontend's accept must
survive a *Postgres server* crash (it is what `CallAccepted` promises; asynchronous commit never
loses data on an application crash, nor corrupts anything). Losing the last few hundred ms of
the other writes is recoverable: a lost dispatch transition leaves the call `queued` (the
reconciler republishes it; the engine drops the stale dispatch), a lost `running` mark is
accepted by the finish update, heartbeats and progress are rewritten every second. So by
default the frontend commits synchronously and the scheduler and engines do not.
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from autellix.settings import asyncpg_dsn, sqlalchemy_url


def _encode_json(value: Any) -> str:
    # a str is already JSON (pydantic's model_dump_json); anything else gets dumped here
    return value if isinstance(value, str) else json.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
    )
    await conn.set_type_codec("json", encoder=_encode_json, decoder=json.loads, schema="pg_catalog")


SYNC_COMMIT_ENV = "AUTELLIX_PG_SYNC_COMMIT"


class _NoResetConnection(asyncpg.Connection):  # type: ignore[misc]
    """Skip the pool's reset query on release (`RESET ALL; UNLISTEN *; CLOSE ALL; ...`).

    That query is one extra round trip per `pool.fetch*()`, which doubled the services' database
    time (profiled). Our code never leaves session state behind: no LISTEN, no session-level
    advisory locks (the reaper's lock is transaction-scoped), no SET outside server_settings.
    """

    def get_reset_query(self) -> str:
        return ""


def synchronous_commit_for(role: str) -> bool:
    """Whether `role`'s connections commit synchronously (see the module docstring)."""
    mode = os.environ.get(SYNC_COMMIT_ENV, "accept").strip().lower()
    if mode in ("on", "true", "1"):
        return True
    if mode in ("off", "false", "0"):
        return False
    return role == "frontend"


async def create_pool(
    database_url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str = "autellix",
    synchronous_commit: bool = True,
    generic_plans: bool = False,
) -> asyncpg.Pool:
    """An asyncpg pool with JSON codecs, JIT off (it only slows short OLTP statements).

    `generic_plans`: its prepared statements always run their generic plan. Why: Postgres
    re-plans a statement for every execution while it estimates the custom plan cheaper, and for
    the scheduler's `load_calls` (a join plus a lateral subquery over `= ANY($1)`) it always
    does, so planning was more than half of the statement (measured: 0.54 ms a call with
    re-planning, 0.23 ms with the generic plan). Only for pools whose statements look rows up by
    key (the dispatcher's); periodic scans keep the default.
    """
    settings = {
        "jit": "off",
        "application_name": application_name,
        "synchronous_commit": "on" if synchronous_commit else "off",
    }
    if generic_plans:
        settings["plan_cache_mode"] = "force_generic_plan"
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        connection_class=_NoResetConnection,
        server_settings=settings,
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def connect(database_url: str, application_name: str = "autellix") -> asyncpg.Connection:
    """One connection with the same set-up as the pool (tests, one-off tools)."""
    conn = await asyncpg.connect(
        asyncpg_dsn(database_url),
        server_settings={"jit": "off", "application_name": application_name},
    )
    await _init_connection(conn)
    return conn


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """A SQLAlchemy async engine on asyncpg for the same database."""
    kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(sqlalchemy_url(database_url), **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
