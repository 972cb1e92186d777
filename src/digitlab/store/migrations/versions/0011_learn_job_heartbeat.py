"""heartbeat_at on learn_jobs: a running `digitlab learn` says it is alive every few seconds, so a dropped lock
connection (free on the server until the run takes it back, up to 5 s) no longer reads as a killed run: the job
was marked failed while it kept training, and "Learn now" started a second run.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("learn_jobs", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("learn_jobs") as batch:
        batch.drop_column("heartbeat_at")
