"""Columns for analysis (uid, model version, latency, session, source, PNG images) and indexes.

The record uid (UNIQUE) makes spool replays idempotent; the two PNG columns hold the submitted drawing and
the 28x28 input the model saw; the indexes serve history pages and stats.

Columns are added (nullable) so the original app's rows are preserved. On SQLite a table created with the
original SQL has `id SERIAL`, which SQLite does not auto-number (only `INTEGER PRIMARY KEY` is a rowid
alias): that table is copied into a correctly typed one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "user_predictions"


def _original() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("timestamp", sa.DateTime, server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("model_name", sa.String(64)),
        sa.Column("drawn_digit", sa.Integer),
        sa.Column("predicted_digit", sa.Integer),
        sa.Column("probability", sa.Float),
        sa.Column("probabilities", sa.Text),
        sa.Column("correct", sa.Boolean),
        sa.Column("background_color", sa.String(16)),
        sa.Column("pen_color", sa.String(16)),
    ]


def _added() -> list[sa.Column]:
    return [
        sa.Column("uid", sa.String(32)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("latency_ms", sa.Float),
        sa.Column("session_id", sa.String(64)),
        sa.Column("source", sa.String(8)),
        sa.Column("image_png", sa.LargeBinary),
        sa.Column("processed_png", sa.LargeBinary),
    ]


INDEXES = [
    ("ix_user_predictions_uid", ["uid"], True),
    ("ix_user_predictions_timestamp", ["timestamp", "id", "correct"], False),
    ("ix_user_predictions_model_timestamp", ["model_name", "timestamp", "id", "correct"], False),
    ("ix_user_predictions_stats", ["model_name", "drawn_digit", "predicted_digit", "timestamp"], False),
]


def _sqlite_id_is_rowid(bind) -> bool:
    info = bind.exec_driver_sql(f"PRAGMA table_info({TABLE})").fetchall()
    return any(row[1] == "id" and row[2].upper() == "INTEGER" and row[5] for row in info)


def _rebuild_sqlite_table() -> None:
    """Copy the original rows into a table whose id is INTEGER PRIMARY KEY (auto-numbered)."""
    bind = op.get_bind()
    names = ", ".join(f'"{c.name}"' for c in _original())
    op.create_table(f"{TABLE}_new", *_original(), *_added(), sqlite_autoincrement=True)
    bind.exec_driver_sql(f"INSERT INTO {TABLE}_new ({names}) SELECT {names} FROM {TABLE} ORDER BY rowid")
    op.drop_table(TABLE)
    op.rename_table(f"{TABLE}_new", TABLE)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and not _sqlite_id_is_rowid(bind):
        _rebuild_sqlite_table()
    existing = {c["name"] for c in sa.inspect(bind).get_columns(TABLE)}
    for column in _added():
        if column.name not in existing:
            op.add_column(TABLE, column)
    for name, columns, unique in INDEXES:
        op.create_index(name, TABLE, columns, unique=unique)


def downgrade() -> None:
    for name, _, _ in INDEXES:
        op.drop_index(name, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        for column in _added():
            batch.drop_column(column.name)
