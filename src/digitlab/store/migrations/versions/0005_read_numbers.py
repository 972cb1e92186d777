"""Read numbers: a number written on a wide canvas or photographed (`POST /api/v1/read`) is one record,
with the digits read (`text`), each digit's result, box and 28x28 input as JSON (`digits`), the image,
and the person's answer (`true_text`, `correct`). The live reads of one drawing (the UI reads after
every stroke) share a `drawing_id` and update one row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "read_numbers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("timestamp", sa.DateTime, nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32)),
        sa.Column("text", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("digits", sa.Text, nullable=False),
        sa.Column("true_text", sa.String(64)),
        sa.Column("correct", sa.Boolean),
        sa.Column("latency_ms", sa.Float),
        sa.Column("session_id", sa.String(64)),
        sa.Column("source", sa.String(8)),
        sa.Column("drawing_id", sa.String(32)),
        sa.Column("image_png", sa.LargeBinary),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_read_numbers_timestamp", "read_numbers", ["timestamp", "id"])
    op.create_index("ix_read_numbers_drawing", "read_numbers", ["drawing_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_read_numbers_drawing", table_name="read_numbers")
    op.drop_index("ix_read_numbers_timestamp", table_name="read_numbers")
    op.drop_table("read_numbers")
