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

# what services check at start lives in `schema_check` (no Alembic or SQLAlchemy import there:
# a restarted service is serving ~0.4 s sooner); re-exported for the CLI and tests
from autellix.store.schema_check import (
    SCHEMA_HEAD,
    NotMigratedError,
    current_revision,
    redact,
    require_migrated,
)

__all__ = [
    "SCHEMA_HEAD",
    "NotMigratedError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "redact",
    "require_migrated",
    "upgrade",
]


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
