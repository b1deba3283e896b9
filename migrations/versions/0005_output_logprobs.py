"""calls.output_logprobs: the per-token log-probabilities of a call's saved tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 23:40:00

Why: a call that asked for logprobs and moved to another engine (its engine died, drained, or
handed it back) resumes from the tokens saved in its row, and the next engine cannot compute the
earlier tokens' logprobs again. Saved beside the tokens (one entry per token, the engine's
`TokenLogprob` list as compact JSON), they travel in the resumed Dispatch and in answers read
from the row (a duplicate submit, a `CallResume`). `json`, not `jsonb`: the text is kept as
written, so the scheduler splices it into the Dispatch without re-rendering (jsonb would add a
space after every `,` and `:` and could push a message past the bus limit the door checked).
NULL: the call did not ask, or not every saved token's entry is known (rows written before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("output_logprobs", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "output_logprobs")
