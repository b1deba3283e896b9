"""Run Alembic migrations programmatically and check that a database is at head.

The migration scripts ship inside the package (`autellix.migrations`, mapped from the top-level
`migrations/` directory), so `autellix db upgrade` works from a plain `pip install`, not only
from a checkout.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from autellix.runtime.settings import sqlalchemy_url


class NotMigratedError(RuntimeError):
    """The database schema is missing or older than this code expects."""


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("autellix.migrations")))
    if database_url is not None:
        # stored unescaped on the attributes: Config's ini interpolation would choke on '%'
        cfg.attributes["database_url"] = sqlalchemy_url(database_url)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (sync; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


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
    head = head_revision()
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
