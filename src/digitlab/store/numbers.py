"""Read numbers in `read_numbers` (migration 0005): what goes in, what comes back, and every query on
the table as SQLAlchemy Core statements (always parameterised).

These functions talk to the database and nothing else (they raise SQLAlchemy errors when it is away);
`PredictionStore.add_number` puts a number in the outage spool instead, like a prediction, and the
spool's replay uses `insert_missing` / `apply_true_text` (idempotent thanks to the record's `uid`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer, field_validator, model_validator
from sqlalchemy import Engine, bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from digitlab.store.models import NUMBERS as N
from digitlab.store.records import (
    MODEL_NAME_LEN,
    MODEL_VERSION_LEN,
    NUMBER_TEXT_LEN,
    SESSION_ID_LEN,
    UID_LEN,
    Source,
    not_stored,
    utc_naive,
    utc_now,
)
from digitlab.store.repository import (
    MAX_PAGE_SIZE,
    history_filters,
    new_values,
    no_later_label,
    update_else_upsert,
)

DIGITS_ONLY = re.compile(r"^[0-9]*$")
#: `true_text` of a reading whose author said it is no number at all (a smiley, a word): stored in the same column
#: (like a prediction's NOT_A_DIGIT label), so the outage spool, its replay and the pending answers carry it as
#: they carry a number; `correct` is false (no digits were there to read). API answers say `not_number: true`.
NOT_A_NUMBER = "-"


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
    source: Source | None = None
    drawing_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    image_png: bytes | None = None
    #: generated here, so a replay of the outage spool stores the number once (and feedback can find it)
    uid: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=UID_LEN)
    #: when it was read (not when a spooled record reached the table)
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def to_row(self) -> dict[str, Any]:
        row = self.model_dump(exclude={"digits"})
        row["digits"] = json.dumps(self.digits, separators=(",", ":"))
        row["correct"] = None if self.true_text is None else self.true_text == self.text
        row["timestamp"] = utc_naive(self.timestamp)
        row["labelled_at"] = row["timestamp"] if self.true_text is not None else None
        return row

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict for the spool (the image as base64)."""
        data = self.model_dump(mode="json", exclude={"image_png"})
        data["image_png"] = (
            None if self.image_png is None else base64.b64encode(self.image_png).decode("ascii")
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NumberRecord:
        data = dict(data)
        if data.get("image_png") is not None:
            data["image_png"] = base64.b64decode(data["image_png"])
        return cls.model_validate(data)


class StoredNumber(BaseModel):
    """A stored read number as `GET /api/v1/numbers` returns it (no image bytes)."""

    id: int
    uid: str | None = Field(description="Unique id of the record (feedback works with it while spooled).")
    timestamp: datetime | None
    model_name: str
    model_version: str | None
    text: str
    confidence: float
    uncertain: bool
    digits: list[dict[str, Any]] = Field(description="Per digit: digit, confidence, probabilities, box, ...")
    true_text: str | None = Field(description="What was really written; null when not said or not a number.")
    not_number: bool = Field(False, description="Its author said it is no number at all.")
    correct: bool | None
    latency_ms: float | None
    session_id: str | None
    source: str | None
    has_image: bool

    @model_validator(mode="before")
    @classmethod
    def _not_number(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("true_text") == NOT_A_NUMBER:
            data = {**data, "true_text": None, "not_number": True}
        return data

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_serializer("timestamp")
    def _iso(self, value: datetime | None) -> str | None:
        return value.isoformat() if value else None  # as /predictions writes it (pydantic wrote "Z" here)


_COLUMNS = [
    N.c.id,
    N.c.uid,
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


def _upsert(dialect: str):
    """INSERT ... ON CONFLICT (drawing_id) DO UPDATE: the drawing's latest reading replaces the row (its
    id stays; a `true_text` given earlier stays unless this one brings one). A row that already holds a later
    reading is left as it is: a stroke sent later (`timestamp`: when its request arrived) answered first, or a
    spool replayed twice, must not bring an older one back."""
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(N)
    return ins.on_conflict_do_update(
        index_elements=[N.c.drawing_id],
        set_=_reading_update(ins.excluded),
        where=N.c.timestamp <= ins.excluded.timestamp,
    )


def _reading_update(new) -> dict[str, Any]:
    """The SET of a drawing's later reading over its row (`new[column]`: the new values)."""
    true_text = func.coalesce(new["true_text"], N.c.true_text)
    return {
        **{c.name: new[c.name] for c in N.columns if c.name not in ("id", "true_text", "correct", "labelled_at")},
        "true_text": true_text,
        "correct": case((true_text.is_(None), None), else_=true_text == new["text"]),
        "labelled_at": case((new["true_text"].is_not(None), new["timestamp"]), else_=N.c.labelled_at),
    }


_NEW = new_values(N)  #: a drawing's next reading
#: UPDATE of the row of a drawing read before, unless it holds a later reading ... RETURNING id (none: not stored
#: yet, or a later reading is; `update_else_upsert`)
_UPDATE_READING = (
    update(N).where((N.c.drawing_id == _NEW["drawing_id"]) & (N.c.timestamp <= _NEW["timestamp"]))
    .values(_reading_update(_NEW)).returning(N.c.id)
)  # fmt: skip


def insert_number(engine: Engine, record: NumberRecord) -> int:
    """Store one read number, or update its drawing's row (a `true_text` given earlier stays); returns its id.
    A reading older than its drawing's row (two strokes in flight, the later one answered first: the row kept an
    earlier, partial picture, a probe, session 45) leaves the row as it is, its `true_text` given to the row."""
    with engine.begin() as conn:
        if not record.drawing_id:
            return conn.execute(insert(N).values(record.to_row())).inserted_primary_key[0]
        upsert = _upsert(conn.dialect.name).returning(N.c.id)
        row = record.to_row()
        stored = update_else_upsert(conn, _UPDATE_READING, upsert, row)
        if stored is not None:
            return stored
        if record.true_text is not None:
            apply_true_text(conn, "drawing_id", {record.drawing_id: (record.true_text, row["timestamp"])})
        return conn.execute(select(N.c.id).where(N.c.drawing_id == record.drawing_id)).scalar_one()


def insert_missing(conn, records: list[NumberRecord]) -> int:
    """Spool replay: store, in order, the records whose uid is not stored yet; returns how many. A
    drawing's reading only replaces a row holding an older one, so replaying twice changes nothing. Two
    executemany at most: each execution sees the ones before it, so a drawing's later reading wins."""
    missing = not_stored(conn, N.c.uid, records)
    plain = [r.to_row() for r in missing if not r.drawing_id]
    drawings = [r.to_row() for r in missing if r.drawing_id]
    if plain:
        conn.execute(insert(N), plain)
    if drawings:
        conn.execute(_upsert(conn.dialect.name), drawings)
    return len(missing)


def apply_true_text(conn, key: Literal["id", "uid", "drawing_id"], answers: dict[Any, tuple[str, datetime]]) -> None:
    """Spool replay: many "what did you write?" answers, (text, when it was given), keyed by `id`, `uid` or
    `drawing_id` (unknown keys change nothing; a number answered later keeps its answer)."""
    t = bindparam("t", type_=N.c.true_text.type)
    stmt = (
        update(N)
        .where((N.c[key] == bindparam("k")) & no_later_label(N.c.labelled_at))
        .values(true_text=t, correct=case((N.c.text == t, True), else_=False), labelled_at=bindparam("at"))
    )
    conn.execute(stmt, [{"k": k, "t": text, "at": at} for k, (text, at) in answers.items()])


def set_true_text_where(
    engine: Engine, key: Literal["id", "uid"], value: Any, true_text: str
) -> StoredNumber | None:
    """Record what was really written (digits, or NOT_A_NUMBER) and whether the reading was right on the number
    whose `key` is `value`; the updated number, or None if there is none."""
    where = N.c[key] == value
    with engine.begin() as conn:
        done = conn.execute(
            update(N)
            .where(where)
            .values(true_text=true_text, correct=case((N.c.text == true_text, True), else_=False), labelled_at=utc_now())
        ).rowcount
        if not done:
            return None
        return _stored(conn.execute(select(*_COLUMNS).where(where)).one())


def set_true_text(engine: Engine, number_id: int, true_text: str) -> StoredNumber | None:
    """Record what was really written (and whether the reading was right); None if there is no such id."""
    return set_true_text_where(engine, "id", number_id, true_text)


@dataclass(frozen=True)
class NumberFeedbackResult:
    """Where an answer went: the updated number (database), or the spool (`number` None) during an outage."""

    stored: Literal["database", "spool"]
    number: StoredNumber | None = None


def select_id_by_uid(uid: str):
    """SELECT the id of the number with this uid."""
    return select(N.c.id).where(N.c.uid == uid)


def get_number(engine: Engine, number_id: int) -> StoredNumber | None:
    """One stored number without its image, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(N.c.id == number_id)).first()
    return None if row is None else _stored(row)


def list_numbers(
    engine: Engine,
    page: int = 1,
    page_size: int = 50,
    *,
    model: str | None = None,
    correct: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[StoredNumber], int]:
    """A page of read numbers, newest first, and how many match: only `model`'s, only right (`correct`
    True) or wrong (False) confirmed ones, from `since` (inclusive) to `until` (exclusive), as the
    prediction history filters (the History page filtered only the newest 500 in the browser)."""
    page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    offset = (max(1, int(page)) - 1) * page_size
    where = history_filters(N, model=model, correct=correct, since=since, until=until)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(N).where(*where)).scalar_one()
        rows = conn.execute(
            select(*_COLUMNS).where(*where).order_by(N.c.timestamp.desc(), N.c.id.desc()).limit(page_size).offset(offset)
        ).all()
    return [_stored(r) for r in rows], int(total)


def get_number_of_drawing(engine: Engine, drawing_id: str) -> StoredNumber | None:
    """The stored number of a drawing (its latest reading), without its image, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(N.c.drawing_id == drawing_id)).first()
    return None if row is None else _stored(row)


def get_number_image(engine: Engine, number_id: int) -> bytes | None:
    """The submitted image of a stored number (PNG), or None."""
    with engine.connect() as conn:
        return conn.execute(select(N.c.image_png).where(N.c.id == number_id)).scalar_one_or_none()


def delete_numbers_older_than(engine: Engine, days: float, *, now: datetime | None = None) -> int:
    """Retention: deletes the read numbers (images included) older than `days`; returns how many (they were
    kept for good while `db prune` deleted the predictions)."""
    cutoff = utc_naive(now or datetime.now(UTC)) - timedelta(days=days)
    with engine.begin() as conn:
        return conn.execute(delete(N).where(N.c.timestamp < cutoff)).rowcount


def labelled_digit_crops(engine: Engine, batch: int = 200) -> Iterator[tuple[int, bytes]]:
    """(true digit, 28x28 PNG) of every digit of a confirmed number whose reading had as many digits as
    were written (so each crop's label is known), oldest first; as the drawings' export: one per distinct image
    and label, and an image given different labels (read again and confirmed "23", then "24") left out."""
    labels: dict[bytes, set[int]] = defaultdict(set)
    for _, _, digit, png in labelled_number_digits(engine, batch):
        labels[hashlib.sha256(png).digest()].add(digit)
    seen: set[bytes] = set()
    for _, _, digit, png in labelled_number_digits(engine, batch):
        digest = hashlib.sha256(png).digest()
        if len(labels.get(digest, ())) == 1 and digest not in seen:
            seen.add(digest)
            yield digit, png


def labelled_number_digits(engine: Engine, batch: int = 200) -> Iterator[tuple[int, str | None, int, bytes]]:
    """(number id, session id, true digit, 28x28 PNG) of every digit of a confirmed number whose reading had as
    many digits as were written, oldest first, in id-keyed batches: what learning and the export take from
    numbers (`training.user_data.prepare` sorts out duplicates and contradictions)."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(N.c.id, N.c.session_id, N.c.true_text, N.c.digits)
                .where(N.c.id > last, N.c.true_text.is_not(None))
                .order_by(N.c.id)
                .limit(batch)
            ).all()
        if not rows:
            return
        for row in rows:
            digits = json.loads(row.digits)
            if len(digits) != len(row.true_text) or not row.true_text.isdigit():  # (NOT_A_NUMBER: no digits)
                continue
            for char, d in zip(row.true_text, digits, strict=True):
                if d.get("processed_image"):
                    yield row.id, row.session_id, int(char), base64.b64decode(d["processed_image"])
        last = rows[-1].id
