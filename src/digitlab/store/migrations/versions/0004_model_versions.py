"""Model versions and learning jobs: the database is the only state replicas share, so learned models live
in it (artefact bytes with their manifest and SHA-256) and every API process loads the promoted version.

`model_versions`: one row per built version of a model (`status`: promoted, candidate, rejected,
retired); at most one promoted per model. `learn_jobs`: `digitlab learn` runs, with progress, so any
replica can answer `GET /api/v1/learn/{id}`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("parent_version", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("promoted_at", sa.DateTime),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("artifact", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_versions_name_version", "model_versions", ["name", "version"], unique=True)
    op.create_index("ix_model_versions_status", "model_versions", ["status", "name"])
    op.create_table(
        "learn_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("message", sa.Text),
        sa.Column("result", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("learn_jobs")
    op.drop_index("ix_model_versions_status", table_name="model_versions")
    op.drop_index("ix_model_versions_name_version", table_name="model_versions")
    op.drop_table("model_versions")
