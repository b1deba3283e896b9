"""Alembic environment: async SQLAlchemy + asyncpg; the URL comes from `autellix db upgrade`."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from autellix.runtime.settings import sqlalchemy_url
from autellix.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("AUTELLIX_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: pass --database-url or set AUTELLIX_DATABASE_URL")
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        # serialize concurrent upgrades (several services starting at once)
        await connection.exec_driver_sql("SELECT pg_advisory_lock(74657)")
        try:
            await connection.run_sync(_run_sync)
            await connection.commit()
        finally:
            await connection.exec_driver_sql("SELECT pg_advisory_unlock(74657)")
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
