"""The SQLAlchemy models and the Alembic migrations describe the same schema.

Why: services write raw SQL against the migrated database while tools and tests use the models;
if a model changes without a migration (or the reverse) one of them is silently wrong. Alembic's
autogenerate comparison on a freshly migrated database must find nothing to do, and the newest
migration must downgrade and upgrade again cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import run_async, run_in_thread

from autellix.runtime.settings import sqlalchemy_url
from autellix.store.migrate import SCHEMA_HEAD, downgrade, head_revision, upgrade
from autellix.store.models import Base


async def _diff(database_url: str) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                ctx = MigrationContext.configure(
                    sync_conn, opts={"compare_type": True, "compare_server_default": False}
                )
                return list(compare_metadata(ctx, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def _relevant(diffs: list[Any]) -> list[Any]:
    # alembic's own bookkeeping table is not part of the models
    return [d for d in diffs if "alembic_version" not in repr(d)]


def test_models_match_migrations(make_database: Callable[..., str]) -> None:
    url = make_database()
    assert _relevant(run_async(lambda: _diff(url))) == []


def test_newest_migration_round_trips(make_database: Callable[..., str]) -> None:
    url = make_database()
    head = head_revision()
    assert head == "0005" == SCHEMA_HEAD  # what services check at start, without Alembic
    run_in_thread(lambda: downgrade(url, "0004"))
    assert _relevant(run_async(lambda: _diff(url))) != []  # the models are ahead of 0004
    run_in_thread(lambda: upgrade(url))
    assert _relevant(run_async(lambda: _diff(url))) == []


async def _rows(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    from autellix.runtime.settings import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def test_program_tenant_migration_keeps_existing_programs(
    make_database: Callable[..., str],
) -> None:
    """0004 on a database that already holds programs and calls (at 0003): they stay, with no
    tenant (NULL: opened without one), and a new program can then be stored with one."""
    url = make_database(migrated=False)
    run_in_thread(lambda: upgrade(url, "0003"))
    run_async(
        lambda: _rows(
            url,
            """WITH p AS (INSERT INTO programs (id) VALUES ('p-old') RETURNING id)
               INSERT INTO calls (id, program_id, thread_id, parent_ids, status, reply_to, request)
               SELECT 'c-old', id, 'main', '{}', 'queued', '_INBOX.x', '{}'::jsonb FROM p
               RETURNING id""",
        )
    )
    run_in_thread(lambda: upgrade(url))
    old = run_async(lambda: _rows(url, "SELECT id, tenant FROM programs"))
    assert old == [{"id": "p-old", "tenant": None}]
    calls = run_async(lambda: _rows(url, "SELECT id, program_id FROM calls"))
    assert calls == [{"id": "c-old", "program_id": "p-old"}]
    run_async(lambda: _rows(url, "INSERT INTO programs (id, tenant) VALUES ('p-new', 'a')"))
    got = run_async(lambda: _rows(url, "SELECT tenant FROM programs WHERE id = 'p-new'"))
    assert got == [{"tenant": "a"}]
