"""pending_feedback: feedback replayed from one process's outage spool before the record it names, which
waits in another process's spool; applied when that record is replayed (see `digitlab.store.pending`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_pending_feedback_uid", "pending_feedback", ["target", "uid"])


def downgrade() -> None:
    op.drop_index("ix_pending_feedback_uid", table_name="pending_feedback")
    op.drop_table("pending_feedback")
