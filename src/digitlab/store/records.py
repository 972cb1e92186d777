"""The values that go in and out of the store, independent of SQLAlchemy.

`PredictionRecord` is what the API hands over; it is normalised on creation so that a record that
was accepted can always be written later (the spool must never hold a record the database refuses).
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_serializer

#: who asked: the UI's canvas, an API client, or a photo or scan uploaded in the UI
Source = Literal["ui", "api", "upload"]
SOURCES = get_args(Source)

# Column widths of user_predictions (the first three are the original app's).
MODEL_NAME_LEN = 64
COLOR_LEN = 16
MODEL_VERSION_LEN = 32
SESSION_ID_LEN = 64
SOURCE_LEN = 8
UID_LEN = 32
NUMBER_TEXT_LEN = 64  # digits of a read number (/read takes true_text up to 32)


def utc_now() -> datetime:
    """Now, as the store keeps every time: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def utc_naive(value: datetime | date) -> datetime:
    """Timestamps are stored as naive UTC (TIMESTAMP WITHOUT TIME ZONE, like the original table)."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


#: the feedback label for "that was not a digit": stored as drawn_digit NULL, not_digit TRUE, correct NULL
#: (so it never counts in digit accuracy, and it is there to teach the not-a-digit detector)
NOT_A_DIGIT = -1


def check_label(value: Any) -> int | None:
    """A feedback label: a digit 0-9, NOT_A_DIGIT, or None (clear the label)."""
    if value == NOT_A_DIGIT and not isinstance(value, bool):
        return NOT_A_DIGIT
    return check_digit(value, "label", optional=True)


def check_digit(value: Any, name: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(f"{name} must be an integer 0-9, got {value!r}")
    return int(value)


def _text(value: Any, width: int) -> str | None:
    """Cut strings to the column width: a too-long colour must not make a record unwritable."""
    return None if value is None else str(value)[:width]


@dataclass
class PredictionRecord:
    """One answered prediction. `uid` is generated here so replays of the spool are idempotent."""

    model_name: str
    predicted_digit: int
    probabilities: list[float]
    probability: float | None = None  # default: probabilities[predicted_digit]
    model_version: str | None = None
    drawn_digit: int | None = None  # the true digit, when the user told us
    pen_color: str | None = None
    background_color: str | None = None
    image_png: bytes | None = None  # the submitted drawing
    processed_png: bytes | None = None  # the 28x28 input the model saw (8-bit greyscale PNG)
    latency_ms: float | None = None
    session_id: str | None = None
    source: Source = "api"
    #: the live predictions of one drawing share it: the store keeps one row per drawing and model
    drawing_id: str | None = None
    uncertain: bool | None = None  #: the answer was flagged "not sure" (None: not known)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.predicted_digit = check_digit(self.predicted_digit, "predicted_digit", optional=False)
        self.drawn_digit = check_digit(self.drawn_digit, "drawn_digit", optional=True)
        probs = [float(p) for p in self.probabilities]
        if len(probs) != 10 or not all(math.isfinite(p) for p in probs):
            raise ValueError("probabilities must be 10 finite numbers")
        self.probabilities = probs
        if self.probability is None:
            self.probability = probs[self.predicted_digit]
        self.probability = float(self.probability)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not self.uid or len(self.uid) > UID_LEN:
            raise ValueError(f"uid must be 1-{UID_LEN} characters")
        self.model_name = _text(self.model_name, MODEL_NAME_LEN) or ""
        self.model_version = _text(self.model_version, MODEL_VERSION_LEN)
        self.pen_color = _text(self.pen_color, COLOR_LEN)
        self.background_color = _text(self.background_color, COLOR_LEN)
        self.session_id = _text(self.session_id, SESSION_ID_LEN)
        if self.drawing_id is not None and not 1 <= len(str(self.drawing_id)) <= UID_LEN:
            raise ValueError(f"drawing_id must be 1-{UID_LEN} characters")
        if self.latency_ms is not None:
            self.latency_ms = float(self.latency_ms)
        if self.uncertain is not None:
            self.uncertain = bool(self.uncertain)
        if self.timestamp.tzinfo is None:
            self.timestamp = self.timestamp.replace(tzinfo=UTC)

    @property
    def correct(self) -> bool | None:
        return None if self.drawn_digit is None else self.drawn_digit == self.predicted_digit

    def to_row(self) -> dict[str, Any]:
        """Column values for user_predictions."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["probabilities"] = json.dumps(self.probabilities)
        row["timestamp"] = utc_naive(self.timestamp)
        row["correct"] = self.correct
        row["labelled_at"] = row["timestamp"] if self.drawn_digit is not None else None
        return row

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict for the spool (bytes as base64)."""
        data = asdict(self)
        for key in ("image_png", "processed_png"):
            if data[key] is not None:
                data[key] = base64.b64encode(data[key]).decode("ascii")
        data["timestamp"] = self.timestamp.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictionRecord:
        data = dict(data)
        for key in ("image_png", "processed_png"):
            if data.get(key) is not None:
                data[key] = base64.b64decode(data[key])
        data["timestamp"] = datetime.fromisoformat(data["timestamp"])
        return cls(**data)


@dataclass(frozen=True)
class AddResult:
    """Where a record went: `id` is None while it waits in the spool (use `uid` for feedback)."""

    id: int | None
    uid: str
    stored: Literal["database", "spool", "refused"]  #: refused: the database will not take it (rejected.jsonl)


class StoredPrediction(BaseModel):
    """A stored prediction as read back: the one definition the repository selects, the API sends
    (`GET /api/v1/predictions`) and the UI parses. Image bytes are fetched apart (`has_image`)."""

    model_config = ConfigDict(frozen=True)

    id: int
    uid: str | None = Field(description="Unique id of the record (feedback works with it while spooled).")
    timestamp: datetime | None = Field(description="When it was answered (UTC, ISO 8601).")
    model_name: str | None
    model_version: str | None
    predicted_digit: int | None
    probability: float | None = Field(description="Probability of `predicted_digit`.")
    probabilities: list[float] | None = Field(description="Digits 0-9.")
    drawn_digit: int | None = Field(description="What the user said they drew.")
    correct: bool | None = Field(description="`predicted_digit == drawn_digit`; null while unlabelled.")
    pen_color: str | None
    background_color: str | None
    latency_ms: float | None
    session_id: str | None
    source: str | None
    drawing_id: str | None = Field(description="Groups the live predictions of one drawing (one row per model).")
    not_digit: bool | None = Field(description="The user said the drawing is not a digit.")
    uncertain: bool | None = Field(
        None, description="The answer was flagged \"not sure\"; null for rows stored before it was kept."
    )
    has_image: bool = Field(description="The submitted drawing is stored (`.../image?kind=input`).")
    has_processed: bool = Field(description="The 28x28 input is stored (`.../image?kind=processed`).")

    @field_serializer("timestamp")
    def _iso(self, value: datetime | None) -> str | None:
        return value.isoformat() if value else None


#: columns of user_predictions that a StoredPrediction reads as they are (the rest are computed)
STORED_COLUMNS = tuple(name for name in StoredPrediction.model_fields if not name.startswith("has_"))


def parse_probabilities(text: str | None) -> list[float] | None:
    """JSON list (ours); rows of the original app may hold another notation, so be lenient."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = text.strip("[](){} \n").replace(",", " ").split()
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def not_stored(conn, uid_column, records: list) -> list:
    """The records (in order, each uid once) whose uid is not in `uid_column` yet: what a spool replay
    still has to write. One parameterised SELECT ... WHERE uid IN (...)."""
    from sqlalchemy import select

    present = set(conn.scalars(select(uid_column).where(uid_column.in_([r.uid for r in records]))))
    missing = []
    for record in records:
        if record.uid not in present:
            present.add(record.uid)
            missing.append(record)
    return missing
