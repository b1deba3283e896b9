"""live scheduling: rank state per call, live service and starvation totals per program,
explainable events, idle-TTL index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:40:00

Why each column exists: docs/scheduling.md, "Live system". All additions have server defaults
(or are nullable), so the upgrade is instant on a populated database and old rows read as
"never promoted, no live progress".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("programs", sa.Column("attained", sa.Float(), server_default="0", nullable=False))
    op.add_column("programs", sa.Column("run_s", sa.Float(), server_default="0", nullable=False))
    op.add_column(
        "programs", sa.Column("starve_wait_s", sa.Float(), server_default="0", nullable=False)
    )
    op.add_column(
        "programs", sa.Column("starve_run_s", sa.Float(), server_default="0", nullable=False)
    )
    op.create_index(
        "ix_programs_open_last_call",
        "programs",
        ["last_call_at"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.add_column("calls", sa.Column("rank_base", sa.Float(), server_default="0", nullable=False))
    op.add_column("calls", sa.Column("tiebreak", sa.Float(), server_default="0", nullable=False))
    op.add_column(
        "calls", sa.Column("aged", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("calls", sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("calls", sa.Column("reset_run_s", sa.Float(), server_default="0", nullable=False))
    op.add_column(
        "calls", sa.Column("control_seq", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("call_events", sa.Column("value", sa.Float(), nullable=True))
    op.add_column("call_events", sa.Column("other_call_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("call_events", "other_call_id")
    op.drop_column("call_events", "value")
    op.drop_column("calls", "control_seq")
    op.drop_column("calls", "reset_run_s")
    op.drop_column("calls", "reset_at")
    op.drop_column("calls", "aged")
    op.drop_column("calls", "tiebreak")
    op.drop_column("calls", "rank_base")
    op.drop_index(
        "ix_programs_open_last_call",
        table_name="programs",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.drop_column("programs", "starve_run_s")
    op.drop_column("programs", "starve_wait_s")
    op.drop_column("programs", "run_s")
    op.drop_column("programs", "attained")
