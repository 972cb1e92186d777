"""One drawing, one record: `drawing_id` groups the live predictions of one drawing into one row per model,
and `not_digit` records a user saying "that was not a digit".

While a person draws, the UI predicts after every stroke with the same `drawing_id`; the store updates the
drawing's row (per model) instead of adding one, so history, stats, exports and training data see each
drawing once, with its final prediction. Rows written before this migration have no drawing id (each is
its own drawing); unique indexes treat NULLs as distinct on both SQLite and PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "user_predictions"
INDEX = "ix_user_predictions_drawing"


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    if "drawing_id" not in existing:
        op.add_column(TABLE, sa.Column("drawing_id", sa.String(32)))
    if "not_digit" not in existing:
        op.add_column(TABLE, sa.Column("not_digit", sa.Boolean))
    op.create_index(INDEX, TABLE, ["drawing_id", "model_name"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("not_digit")
        batch.drop_column("drawing_id")
