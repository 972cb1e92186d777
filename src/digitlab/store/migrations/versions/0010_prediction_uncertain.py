"""uncertain on user_predictions: whether the answer was flagged "not sure", so History and audits show the
flag the user saw (until now only read numbers kept it).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_predictions", sa.Column("uncertain", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_predictions") as batch:
        batch.drop_column("uncertain")
