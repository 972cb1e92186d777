"""replayed_strokes: which drawing each stroke replayed from an outage spool belongs to, so that a label
given by that stroke's uid still finds the drawing after a later stroke took the drawing's row (see
`digitlab.store.pending`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replayed_strokes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("drawing_id", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_replayed_strokes_uid", "replayed_strokes", ["target", "uid"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_replayed_strokes_uid", table_name="replayed_strokes")
    op.drop_table("replayed_strokes")
