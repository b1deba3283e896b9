"""Database connections: asyncpg pools and connections for every statement the services run.

Why raw asyncpg: the services run a handful of fixed statements per call (the modules of
`autellix.store`, see `autellix.store.states`), each a single round trip with a conditional
`UPDATE ... WHERE status IN (...)`; asyncpg with prepared statements keeps that at the ~0.2 ms
a local round trip costs, where the SQLAlchemy async ORM adds several times that. SQLAlchemy
describes the schema (`models`); the Alembic migrations and the schema tests open their own
SQLAlchemy engines on it.

**Commit durability** (`AUTELLIX_PG_SYNC_COMMIT`: `accept` (default) | `on` | `off`). A synchronous
commit waits for the WAL fsync: ~4 ms per commit on this machine's disk against ~0.15 ms without,
and a call makes four commits (accept, dispatch, start, finish). Only the frontend's accept must
survive a *Postgres server* crash (it is what `CallAccepted` promises; asynchronous commit never
loses data on an application crash, nor corrupts anything). Nor may a transition after which
a message goes out that names it: the dispatch transition and a requeue (the Dispatch or
ScheduleCall published next is named by the attempt, and a copy of it under the same name after
the transition was lost is dropped as a duplicate: `store.dispatch`), and the transitions that
answer a call (`store.finish`: its final or error goes out right after). Those commit
synchronously whatever the connection's default (`set_config` in the statement, no extra round
trip). Losing the last few hundred ms of the other writes is recoverable: a lost `running` mark
is accepted by the finish update, heartbeats and progress are rewritten every second. So by
default the frontend commits synchronously and the scheduler and engines do not, but for those.

**Through a transaction pooler** (`AUTELLIX_PG_POOL_MODE=transaction`: PgBouncer's
`pool_mode = transaction`, or a managed service's pooler in that mode). Each transaction may run
on another server connection, so nothing may outlive one: asyncpg's named prepared statements
are turned off (`statement_cache_size=0`: unnamed statements, parsed and run inside one
transaction), and the session settings above (`jit`, `synchronous_commit`,
`plan_cache_mode`) are not sent as startup parameters, which PgBouncer refuses; set them on the
role instead (`ALTER ROLE autellix SET jit = off`, see docs/deploy.md). The rest already holds:
the maintenance lock is transaction-scoped (`pg_try_advisory_xact_lock`), no `LISTEN`, no
temporary tables, no `SET` outside `SET LOCAL`. Migrations need a session: run
`autellix db upgrade` against Postgres itself, not through the pooler.
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg

from autellix.runtime.settings import asyncpg_dsn

#: What a Postgres outage looks like from a service: the socket gone or refused, the server
#: restarting ("the database system is starting up") or shutting down ("terminating connection
#: due to administrator command" / "unexpected postmaster exit"), out of connection slots, or a
#: pooled connection left mid-protocol by the crash ("cannot switch to state ..."). Each is
#: transient; what ran may or may not have committed, so only idempotent statements are retried
#: on them, and a request failed by one is answered `unavailable` (retryable), not `internal`.
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,
)


def db_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a Postgres outage (`DB_UNAVAILABLE`), not a bug."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DB_UNAVAILABLE):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


# What every statement in `autellix.store` runs on: a pool (one statement, its own transaction)
# or a connection (the caller's transaction).
Conn = asyncpg.Connection | asyncpg.Pool


def _encode_json(value: Any) -> str:
    # a str is already JSON (pydantic's model_dump_json); anything else gets dumped here
    return value if isinstance(value, str) else json.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
    )
    await conn.set_type_codec("json", encoder=_encode_json, decoder=json.loads, schema="pg_catalog")


SYNC_COMMIT_ENV = "AUTELLIX_PG_SYNC_COMMIT"
POOL_MODE_ENV = "AUTELLIX_PG_POOL_MODE"
POOL_MODES = ("session", "transaction")


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


def pool_mode() -> str:
    """`AUTELLIX_PG_POOL_MODE`: `session` (default: Postgres itself, or a session pooler) or
    `transaction` (a transaction pooler: see the module docstring). Anything else is an error,
    since guessing wrong fails at the first statement under load, not at start."""
    mode = os.environ.get(POOL_MODE_ENV, "").strip().lower() or "session"
    if mode not in POOL_MODES:
        raise ValueError(f"{POOL_MODE_ENV} must be one of {', '.join(POOL_MODES)}, got {mode!r}")
    return mode


def connection_options(server_settings: dict[str, str]) -> dict[str, Any]:
    """asyncpg connect options for the pool mode: all of `server_settings` and the statement
    cache on a session; only `application_name` (which PgBouncer passes on) and no named
    prepared statements through a transaction pooler."""
    if pool_mode() == "transaction":
        kept = {k: v for k, v in server_settings.items() if k == "application_name"}
        return {"server_settings": kept, "statement_cache_size": 0}
    return {"server_settings": server_settings}


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
        command_timeout=30,
        **connection_options(settings),
    )
    assert pool is not None
    return pool


async def connect(database_url: str, application_name: str = "autellix") -> asyncpg.Connection:
    """One connection with the same set-up as the pool (tests, one-off tools)."""
    conn = await asyncpg.connect(
        asyncpg_dsn(database_url),
        **connection_options({"jit": "off", "application_name": application_name}),
    )
    await _init_connection(conn)
    return conn
