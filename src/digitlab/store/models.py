"""SQLAlchemy 2 model of `user_predictions`: the original app's columns first, then ours.

The schema is created by the Alembic migrations (never `create_all`); a test checks that this model and
the migrated database agree. Images come last so SQLite keeps the small columns in the row's first page.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from digitlab.store import records as r


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    __tablename__ = "user_predictions"

    # --- the original app's table, unchanged (existing SQL keeps working) ----------------------------
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # SERIAL on PostgreSQL
    timestamp: Mapped[datetime | None] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    model_name: Mapped[str | None] = mapped_column(String(r.MODEL_NAME_LEN))
    drawn_digit: Mapped[int | None] = mapped_column(Integer)
    predicted_digit: Mapped[int | None] = mapped_column(Integer)
    probability: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[str | None] = mapped_column(Text)  # JSON list of 10 floats
    correct: Mapped[bool | None] = mapped_column(Boolean)
    background_color: Mapped[str | None] = mapped_column(String(r.COLOR_LEN))
    pen_color: Mapped[str | None] = mapped_column(String(r.COLOR_LEN))

    # --- added by digitlab (migration 0002) -------------------------------------------------------
    uid: Mapped[str | None] = mapped_column(String(r.UID_LEN))  # unique; NULL for the original rows
    model_version: Mapped[str | None] = mapped_column(String(r.MODEL_VERSION_LEN))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    session_id: Mapped[str | None] = mapped_column(String(r.SESSION_ID_LEN))
    source: Mapped[str | None] = mapped_column(String(r.SOURCE_LEN))
    # --- added by migration 0003: one drawing, one row per model; "not a digit" feedback ---------------
    drawing_id: Mapped[str | None] = mapped_column(String(r.UID_LEN))
    not_digit: Mapped[bool | None] = mapped_column(Boolean)
    image_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    processed_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    # --- added by migration 0008: when the label was given (the last one given wins on spool replays) ---
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime)
    # --- added by migration 0010: the answer was flagged "not sure" (NULL for older rows) ---------------
    uncertain: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_user_predictions_uid", "uid", unique=True),
        # history pages, newest first, optionally per model; `correct` is carried so that filtering and
        # counting by it never reads the (large) rows
        Index("ix_user_predictions_timestamp", "timestamp", "id", "correct"),
        Index("ix_user_predictions_model_timestamp", "model_name", "timestamp", "id", "correct"),
        # stats (confusion cells and accuracy per day): an index-only scan, never the rows with images
        Index("ix_user_predictions_stats", "model_name", "drawn_digit", "predicted_digit", "timestamp"),
        Index("ix_user_predictions_drawing", "drawing_id", "model_name", unique=True),
        {"sqlite_autoincrement": True},
    )


TABLE = Prediction.__table__


class ModelVersion(Base):
    """A built version of a model (migration 0004): the artefact itself, so every replica can load it."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(r.MODEL_NAME_LEN))
    version: Mapped[str] = mapped_column(String(r.MODEL_VERSION_LEN))
    parent_version: Mapped[str | None] = mapped_column(String(r.MODEL_VERSION_LEN))
    status: Mapped[str] = mapped_column(String(16))  # promoted | candidate | rejected | retired
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime)
    sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[str] = mapped_column(Text)  # JSON
    artifact: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_model_versions_name_version", "name", "version", unique=True),
        Index("ix_model_versions_status", "status", "name"),
        {"sqlite_autoincrement": True},
    )


class LearnJob(Base):
    """A `digitlab learn` run (migration 0004): status and progress any replica can report."""

    __tablename__ = "learn_jobs"

    id: Mapped[str] = mapped_column(String(r.UID_LEN), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    progress: Mapped[float] = mapped_column(Float, server_default=text("0"))
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)  # JSON summary
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # a running run's last sign of life (0011)


VERSIONS = ModelVersion.__table__
JOBS = LearnJob.__table__


class ReadNumber(Base):
    """A written number read by `/read` (migration 0005): one row per number, its digits as JSON."""

    __tablename__ = "read_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    model_name: Mapped[str] = mapped_column(String(r.MODEL_NAME_LEN))
    model_version: Mapped[str | None] = mapped_column(String(r.MODEL_VERSION_LEN))
    read_text: Mapped[str] = mapped_column("text", String(r.NUMBER_TEXT_LEN))  # the digits read
    confidence: Mapped[float] = mapped_column(Float)
    uncertain: Mapped[bool] = mapped_column(Boolean)
    digits: Mapped[str] = mapped_column(Text)  # JSON: per digit its result, box and 28x28 PNG (base64)
    true_text: Mapped[str | None] = mapped_column(String(r.NUMBER_TEXT_LEN))  # feedback: what was written
    correct: Mapped[bool | None] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    session_id: Mapped[str | None] = mapped_column(String(r.SESSION_ID_LEN))
    source: Mapped[str | None] = mapped_column(String(r.SOURCE_LEN))
    drawing_id: Mapped[str | None] = mapped_column(String(r.UID_LEN))  # live reads of one drawing: one row
    image_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    # --- added by migration 0006: makes outage-spool replays idempotent; NULL for older rows ---------
    uid: Mapped[str | None] = mapped_column(String(r.UID_LEN))
    # --- added by migration 0008: when `true_text` was given (the last one given wins on replays) -------
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        Index("ix_read_numbers_timestamp", "timestamp", "id"),
        Index("ix_read_numbers_drawing", "drawing_id", unique=True),
        Index("ix_read_numbers_uid", "uid", unique=True),
        {"sqlite_autoincrement": True},
    )


NUMBERS = ReadNumber.__table__


class PendingFeedback(Base):
    """Feedback replayed before the record it names (migration 0007): during an outage each API process
    spools on its own, so a label can reach the database before its prediction, which waits in another
    worker's or replica's spool. It waits here and is applied when the record arrives (`store.pending`)."""

    __tablename__ = "pending_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    target: Mapped[str] = mapped_column(String(16))  # "prediction" | "number"
    uid: Mapped[str] = mapped_column(String(r.UID_LEN))
    label: Mapped[str] = mapped_column(Text)  # JSON: the digit (or null: cleared) or the number's true text

    __table_args__ = (Index("ix_pending_feedback_uid", "target", "uid"), {"sqlite_autoincrement": True})


PENDING = PendingFeedback.__table__


class ReplayedStroke(Base):
    """The drawing of each stroke replayed from an outage spool (migration 0009): a label given by a
    stroke's uid during the outage still reaches its drawing after a later stroke took the drawing's row
    (and its uid). Kept as long as waiting labels (`store.pending.MAX_AGE`)."""

    __tablename__ = "replayed_strokes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    target: Mapped[str] = mapped_column(String(16))  # "prediction" | "number"
    uid: Mapped[str] = mapped_column(String(r.UID_LEN))
    drawing_id: Mapped[str] = mapped_column(String(r.UID_LEN))
    model_name: Mapped[str | None] = mapped_column(String(r.MODEL_NAME_LEN))  # predictions only

    __table_args__ = (Index("ix_replayed_strokes_uid", "target", "uid", unique=True), {"sqlite_autoincrement": True})


STROKES = ReplayedStroke.__table__
