"""Read numbers get a `uid` (unique, client-generated like a prediction's): a number answered during a
database outage waits in the outage spool, and the uid makes its replay idempotent (stored exactly once)
and is the handle for its feedback while it waits. Rows stored before have NULL (distinct in the index).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("read_numbers", sa.Column("uid", sa.String(32)))
    op.create_index("ix_read_numbers_uid", "read_numbers", ["uid"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_read_numbers_uid", table_name="read_numbers")
    with op.batch_alter_table("read_numbers") as batch:
        batch.drop_column("uid")
