"""Whether a database's schema is the one this code needs: what every service checks at start.

Why apart from `migrate`: that module imports Alembic and SQLAlchemy (~0.4 s on an idle core,
over a second on a loaded one), and a service restarted after a crash should not pay it before
serving again. The check needs only the revision stamped in the database and `SCHEMA_HEAD`, the
newest migration's id (`tests/stack/test_store_schema.py` fails when it is not Alembic's head).
"""

from __future__ import annotations

#: the revision of the newest script in `migrations/versions/` (bump it with every migration)
SCHEMA_HEAD = "0005"


class NotMigratedError(RuntimeError):
    """The database schema is missing or older than this code expects."""


async def current_revision(database_url: str) -> str | None:
    """The revision stamped in the database, or None when it was never migrated."""
    import asyncpg

    from autellix.runtime.settings import asyncpg_dsn
    from autellix.store.db import connection_options

    # services call this at start through whatever they connect to, a transaction pooler too
    conn = await asyncpg.connect(asyncpg_dsn(database_url), **connection_options({}))
    try:
        exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return None
        return await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    finally:
        await conn.close()


async def require_migrated(database_url: str) -> None:
    """Refuse to run on an un-migrated or outdated database, with a message that says the fix."""
    rev = await current_revision(database_url)
    head = SCHEMA_HEAD
    if rev != head:
        state = "has no Autellix schema" if rev is None else f"is at revision {rev}"
        raise NotMigratedError(
            f"database {redact(database_url)} {state}; this version needs {head}. "
            f"Run: autellix db upgrade --database-url <url>"
        )


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
