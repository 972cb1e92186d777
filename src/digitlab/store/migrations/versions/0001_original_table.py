"""The original app's table user_predictions, exactly as it created it.

A database that already has the table (the original app ran on it) is left as it is: its rows are kept
and migration 0002 brings it up to date.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("user_predictions"):
        return
    op.create_table(
        "user_predictions",
        sa.Column("id", sa.Integer, primary_key=True),  # SERIAL PRIMARY KEY
        sa.Column("timestamp", sa.DateTime, server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("model_name", sa.String(64)),
        sa.Column("drawn_digit", sa.Integer),
        sa.Column("predicted_digit", sa.Integer),
        sa.Column("probability", sa.Float),
        sa.Column("probabilities", sa.Text),
        sa.Column("correct", sa.Boolean),
        sa.Column("background_color", sa.String(16)),
        sa.Column("pen_color", sa.String(16)),
        sqlite_autoincrement=True,  # SQLite: never reuse the id of a deleted row (SERIAL does not)
    )


def downgrade() -> None:
    op.drop_table("user_predictions")
