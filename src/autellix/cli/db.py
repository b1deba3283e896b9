"""`autellix db`: apply and inspect the Postgres schema migrations."""

from __future__ import annotations

import asyncio
import os

import typer

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)

DatabaseUrl = typer.Option(
    None,
    "--database-url",
    envvar="AUTELLIX_DATABASE_URL",
    help="Postgres URL (postgresql://user:pass@host:port/db).",
)


def _require(url: str | None) -> str:
    url = url or os.environ.get("AUTELLIX_DATABASE_URL")
    if not url:
        typer.echo(
            "error: no database URL; pass --database-url or set AUTELLIX_DATABASE_URL", err=True
        )
        raise typer.Exit(2)
    return url


@db_app.command()
def upgrade(database_url: str | None = DatabaseUrl, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from autellix.store import migrate

    url = _require(database_url)
    migrate.upgrade(url, revision)
    typer.echo(f"database {migrate.redact(url)} is at {asyncio.run(migrate.current_revision(url))}")


@db_app.command()
def downgrade(revision: str, database_url: str | None = DatabaseUrl) -> None:
    """Roll the schema back to REVISION ('base' removes everything)."""
    from autellix.store import migrate

    url = _require(database_url)
    migrate.downgrade(url, revision)
    typer.echo(f"database {migrate.redact(url)} is at {asyncio.run(migrate.current_revision(url))}")


@db_app.command()
def current(database_url: str | None = DatabaseUrl) -> None:
    """Print the database's revision and whether it is up to date (exit 1 if not)."""
    from autellix.store import migrate

    url = _require(database_url)
    rev = asyncio.run(migrate.current_revision(url))
    head = migrate.head_revision()
    typer.echo(f"current: {rev or '<none>'}  head: {head}")
    if rev != head:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
