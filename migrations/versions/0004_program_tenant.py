"""programs.tenant: the tenant (HTTP API key) that opened a program

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:00:00

Why: a program belongs to the tenant that opened it. Over HTTP with API keys, a request naming a
program of another tenant (a call in it, close, cancel) is answered as if the program did not
exist, and admission bounds unfinished calls per tenant; both read the owner from here. Nullable:
NULL means "opened without a tenant" (over NATS, whose clients authenticate per role, or over an
HTTP API without keys), which is what every row written before this revision was.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("programs", sa.Column("tenant", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("programs", "tenant")
