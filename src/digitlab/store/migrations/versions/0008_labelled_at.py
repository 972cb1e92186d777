"""labelled_at on user_predictions and read_numbers: when the label (or the true text) was given, so that
a spool replayed late cannot put an earlier label over a later one (two workers, one person changing
their mind during an outage: the label given last must win).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_predictions", sa.Column("labelled_at", sa.DateTime(), nullable=True))
    op.add_column("read_numbers", sa.Column("labelled_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("read_numbers") as batch:
        batch.drop_column("labelled_at")
    with op.batch_alter_table("user_predictions") as batch:
        batch.drop_column("labelled_at")
