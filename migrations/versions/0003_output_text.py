"""calls.output_text: a finished call's whole output text, as its final carried it

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 12:50:00

Why: a caller that missed its final (published while NATS was down, or to an inbox not yet
back) gets the answer from the call's row (`CallResume`, a duplicate submit), and the row had
its tokens but not its text: the frontend has no tokenizer, so the text must be stored by the
engine that made it. Nullable: rows written before read as "no text", as their answers did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("output_text", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "output_text")
