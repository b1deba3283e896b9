"""Creating and dropping databases on a Postgres server (embedded or not).

`autellix up` needs it because its embedded server starts with only ``postgres``; the tests
create one fresh database per run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from autellix.runtime.settings import asyncpg_dsn, with_database

__all__ = ["create_database", "drop_database"]


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _check_ident(name: str) -> str:
    """``name`` if it is a plain identifier: it is spliced into SQL, where it cannot be bound."""
    if not _IDENT_RE.match(name):
        raise ValueError(f"invalid database name {name!r}")
    return name


async def create_database(
    admin_url: str,
    name: str,
    *,
    exist_ok: bool = True,
    settings: Mapping[str, str] | None = None,
) -> str:
    """Create database ``name`` on the server of ``admin_url``; return a URL for it.

    Used by `autellix up` (its embedded server starts with only ``postgres``) and by the tests
    (one fresh database per run). ``settings``: per-database defaults (``ALTER DATABASE ... SET``)
    for every session on it, as an operator sets them where the services cannot send them at
    connect time (through a transaction pooler: docs/deploy.md).
    """
    import asyncpg

    _check_ident(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not exist_ok:
            raise ValueError(f"database {name!r} already exists")
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                if not exist_ok:
                    raise
        for key, value in (settings or {}).items():
            sql = await conn.fetchval(
                "SELECT format('ALTER DATABASE %I SET %I TO %L', $1::text, $2::text, $3::text)",
                name,
                _check_ident(key),
                value,
            )
            await conn.execute(sql)
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (if it exists), disconnecting its sessions first."""
    import asyncpg

    _check_ident(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
    finally:
        await conn.close()
