"""Read numbers in `read_numbers` (migration 0005): what goes in, what comes back, and every query on
the table as SQLAlchemy Core statements (always parameterised).

A number is written straight to the database (no outage spool, unlike single predictions): when the
database is away the functions raise SQLAlchemy errors and the API answers the reading unstored.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from digitlab.store.models import NUMBERS as N
from digitlab.store.records import MODEL_NAME_LEN, MODEL_VERSION_LEN, NUMBER_TEXT_LEN, SESSION_ID_LEN

MAX_PAGE_SIZE = 500
DIGITS_ONLY = re.compile(r"^[0-9]*$")


class NumberRecord(BaseModel):
    """A read number to store (validated on creation)."""

    model_name: str = Field(min_length=1, max_length=MODEL_NAME_LEN)
    model_version: str | None = Field(None, max_length=MODEL_VERSION_LEN)
    text: str = Field(max_length=NUMBER_TEXT_LEN, pattern=DIGITS_ONLY.pattern)
    confidence: float = Field(ge=0.0, le=1.0)
    uncertain: bool
    digits: list[dict[str, Any]]
    true_text: str | None = Field(None, min_length=1, max_length=NUMBER_TEXT_LEN, pattern=DIGITS_ONLY.pattern)
    latency_ms: float | None = None
    session_id: str | None = Field(None, max_length=SESSION_ID_LEN)
    source: Literal["ui", "api"] | None = None
    drawing_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    image_png: bytes | None = None

    def to_row(self) -> dict[str, Any]:
        row = self.model_dump(exclude={"digits"})
        row["digits"] = json.dumps(self.digits, separators=(",", ":"))
        row["correct"] = None if self.true_text is None else self.true_text == self.text
        return row


class StoredNumber(BaseModel):
    """A stored read number as `GET /api/v1/numbers` returns it (no image bytes)."""

    id: int
    timestamp: datetime | None
    model_name: str
    model_version: str | None
    text: str
    confidence: float
    uncertain: bool
    digits: list[dict[str, Any]] = Field(description="Per digit: digit, confidence, probabilities, box, ...")
    true_text: str | None
    correct: bool | None
    latency_ms: float | None
    session_id: str | None
    source: str | None
    has_image: bool

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


_COLUMNS = [
    N.c.id,
    N.c.timestamp,
    N.c.model_name,
    N.c.model_version,
    N.c.text,
    N.c.confidence,
    N.c.uncertain,
    N.c.digits,
    N.c.true_text,
    N.c.correct,
    N.c.latency_ms,
    N.c.session_id,
    N.c.source,
    N.c.image_png.is_not(None).label("has_image"),
]


def _stored(row: Any) -> StoredNumber:
    data = dict(row._mapping)
    data["digits"] = json.loads(data["digits"])
    return StoredNumber.model_validate(data)


def insert_number(engine: Engine, record: NumberRecord) -> int:
    """Store one read number, or update its drawing's row (a `true_text` given earlier stays); returns its id."""
    with engine.begin() as conn:
        if not record.drawing_id:
            return conn.execute(insert(N).values(record.to_row())).inserted_primary_key[0]
        ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(N).values(record.to_row())
        new = ins.excluded
        true_text = func.coalesce(new.true_text, N.c.true_text)
        stmt = ins.on_conflict_do_update(
            index_elements=[N.c.drawing_id],
            set_={
                **{c.name: new[c.name] for c in N.columns if c.name not in ("id", "true_text", "correct")},
                "true_text": true_text,
                "correct": case((true_text.is_(None), None), else_=true_text == new.text),
            },
        ).returning(N.c.id)
        return conn.execute(stmt).scalar_one()


def set_true_text(engine: Engine, number_id: int, true_text: str) -> StoredNumber | None:
    """Record what was really written (and whether the reading was right); None if there is no such id."""
    with engine.begin() as conn:
        done = conn.execute(
            update(N)
            .where(N.c.id == number_id)
            .values(true_text=true_text, correct=case((N.c.text == true_text, True), else_=False))
        ).rowcount
        if not done:
            return None
        return _stored(conn.execute(select(*_COLUMNS).where(N.c.id == number_id)).one())


def get_number(engine: Engine, number_id: int) -> StoredNumber | None:
    """One stored number without its image, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(N.c.id == number_id)).first()
    return None if row is None else _stored(row)


def list_numbers(engine: Engine, page: int = 1, page_size: int = 50) -> tuple[list[StoredNumber], int]:
    """A page of read numbers, newest first, and how many there are in all."""
    page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    offset = (max(1, int(page)) - 1) * page_size
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(N)).scalar_one()
        rows = conn.execute(
            select(*_COLUMNS).order_by(N.c.timestamp.desc(), N.c.id.desc()).limit(page_size).offset(offset)
        ).all()
    return [_stored(r) for r in rows], int(total)


def get_number_image(engine: Engine, number_id: int) -> bytes | None:
    """The submitted image of a stored number (PNG), or None."""
    with engine.connect() as conn:
        return conn.execute(select(N.c.image_png).where(N.c.id == number_id)).scalar_one_or_none()


def labelled_digit_crops(engine: Engine, batch: int = 200) -> Iterator[tuple[int, bytes]]:
    """(true digit, 28x28 PNG) of every digit of a confirmed number whose reading had as many digits as
    were written (so each crop's label is known), oldest first, in id-keyed batches."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(N.c.id, N.c.true_text, N.c.digits)
                .where(N.c.id > last, N.c.true_text.is_not(None))
                .order_by(N.c.id)
                .limit(batch)
            ).all()
        if not rows:
            return
        for row in rows:
            digits = json.loads(row.digits)
            if len(digits) != len(row.true_text):
                continue
            for char, d in zip(row.true_text, digits, strict=True):
                if d.get("processed_image"):
                    yield int(char), base64.b64decode(d["processed_image"])
        last = rows[-1].id
