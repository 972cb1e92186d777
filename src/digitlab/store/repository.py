"""Every query on `user_predictions`, as SQLAlchemy Core statements (always parameterized).

`Repository` talks to the database and nothing else: it raises SQLAlchemy errors when the database is
away. `PredictionStore` (store.py) adds the outage behaviour on top.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from digitlab.store.models import TABLE as T
from digitlab.store.records import (
    NOT_A_DIGIT,
    STORED_COLUMNS,
    PredictionRecord,
    StoredPrediction,
    not_stored,
    parse_probabilities,
    utc_naive,
    utc_now,
)

MAX_PAGE_SIZE = 500
UNKNOWN_MODEL = "unknown"  # stats key for rows without a model name

_SUMMARY = [
    *(T.c[name] for name in STORED_COLUMNS),
    T.c.image_png.is_not(None).label("has_image"),
    T.c.processed_png.is_not(None).label("has_processed"),
]
_IMAGE_COLUMNS = {"input": T.c.image_png, "processed": T.c.processed_png}


def _summary(row: Any) -> StoredPrediction:
    data = dict(row._mapping)
    data["probabilities"] = parse_probabilities(data["probabilities"])
    if data["timestamp"] is not None:
        data["timestamp"] = data["timestamp"].replace(tzinfo=UTC)
    data["has_image"] = bool(data["has_image"])
    data["has_processed"] = bool(data["has_processed"])
    for flag in ("correct", "uncertain"):
        if data[flag] is not None:
            data[flag] = bool(data[flag])
    return StoredPrediction.model_validate(data)


#: a label as replays carry it: (a digit, NOT_A_DIGIT or None to clear, when it was given, naive UTC)
Label = tuple[int | None, datetime]


def _label_values(label: int | None) -> dict[str, Any]:
    """Column values for a feedback label given now (a digit, NOT_A_DIGIT, or None to clear it)."""
    at = utc_now()
    if label is None:
        return {"drawn_digit": None, "correct": None, "not_digit": None, "labelled_at": at}
    if label == NOT_A_DIGIT:
        return {"drawn_digit": None, "correct": None, "not_digit": True, "labelled_at": at}
    correct = case((T.c.predicted_digit == label, True), else_=False)
    return {"drawn_digit": label, "correct": correct, "not_digit": None, "labelled_at": at}


def no_later_label(column_at):
    """Where-clause of a replayed label given at `:at`: the row holds no label given after it (a label
    replayed late from one worker's spool must not replace the one a person gave last, elsewhere)."""
    return column_at.is_(None) | (column_at <= bindparam("at", type_=DateTime))


#: Built once: a statement given its values at execute time is compiled once and then served from
#: SQLAlchemy's cache; `insert(T).values(row)` built per request cost more than the model itself.
_INSERT = insert(T)
_INSERT_RETURNING = insert(T).returning(T.c.id, sort_by_parameter_order=True)
_UPSERTS: dict[tuple[str, bool], Any] = {}


def history_filters(table, *, model: str | None = None, correct: bool | None = None,
                    since: datetime | date | None = None, until: datetime | date | None = None) -> list:
    """The WHERE terms of a filtered history page of `table` (predictions or read numbers: both have
    `model_name`, `correct` and `timestamp`): one model, right / wrong answers, from `since` to `until`."""
    where = []
    if model is not None:
        where.append(table.c.model_name == model)
    if correct is not None:
        where.append(table.c.correct.is_(bool(correct)))
    if since is not None:
        where.append(table.c.timestamp >= utc_naive(since))
    if until is not None:
        where.append(table.c.timestamp < utc_naive(until))
    return where


def _drawing_update(new) -> dict[str, Any]:
    """The SET of a drawing's later prediction over its row (`new[column]`: the new values): the prediction
    replaces the earlier one; a label already given stays unless this one brings one."""
    drawn = func.coalesce(new["drawn_digit"], T.c.drawn_digit)
    keep = {"id", "drawing_id", "model_name", "drawn_digit", "correct", "not_digit", "labelled_at"}
    return {
        **{c.name: new[c.name] for c in T.columns if c.name not in keep},
        "drawn_digit": drawn,
        "correct": case((drawn.is_(None), None), else_=drawn == new["predicted_digit"]),
        "not_digit": case((new["drawn_digit"].is_not(None), None), else_=T.c.not_digit),
        "labelled_at": case((new["drawn_digit"].is_not(None), new["timestamp"]), else_=T.c.labelled_at),
    }


def _upsert_statement(dialect: str, *, returning: bool = False):
    """INSERT ... ON CONFLICT (drawing_id, model_name) DO UPDATE, for this dialect: a row that holds a later
    prediction (a stroke sent later, `timestamp`) is left as it is. `returning`: RETURNING id (none then)."""
    stmt = _UPSERTS.get((dialect, returning))
    if stmt is None:
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(T)
        stmt = ins.on_conflict_do_update(
            index_elements=[T.c.drawing_id, T.c.model_name],
            set_=_drawing_update(ins.excluded),
            where=T.c.timestamp <= ins.excluded.timestamp,
        )
        _UPSERTS[(dialect, returning)] = stmt = stmt.returning(T.c.id) if returning else stmt
    return stmt


def new_values(table) -> dict[str, Any]:
    """A bound parameter `new_<column>` per column: a row's next values in an UPDATE (`update_else_upsert`)."""
    return {c.name: bindparam(f"new_{c.name}", type_=c.type) for c in table.columns}


def update_else_upsert(conn, update_stmt, upsert_stmt, row: dict[str, Any]) -> int | None:
    """`update_stmt` (on `new_values`, RETURNING id) of the drawing's row, else `upsert_stmt` (RETURNING id); the
    id, or None when the row holds a later stroke (both statements leave such a row as it is). Updated first:
    an upsert takes a number from the id sequence even when it only updates (SQLite's AUTOINCREMENT,
    PostgreSQL's sequence), and the ids people see skipped one per stroke ("saved as #12" after the 9th
    drawing)."""
    found = conn.execute(update_stmt, {f"new_{k}": v for k, v in row.items()}).scalar_one_or_none()
    return found if found is not None else conn.execute(upsert_stmt, row).scalar_one_or_none()


_NEW = new_values(T)  #: a drawing's next values
_OF_DRAWING = (T.c.drawing_id == bindparam("dr")) & (T.c.model_name == bindparam("m"))  #: a drawing's row
#: UPDATE of the row of a drawing and model that is stored already, unless it holds a later stroke ... RETURNING
#: id (none: not stored yet, or a later stroke is)
_LATER_STROKE = (T.c.drawing_id == _NEW["drawing_id"]) & (T.c.model_name == _NEW["model_name"]) & (
    T.c.timestamp <= _NEW["timestamp"])  # fmt: skip
_UPDATE_DRAWING = update(T).where(_LATER_STROKE).values(_drawing_update(_NEW)).returning(T.c.id)


def _upsert_drawing(conn, record: PredictionRecord) -> int:
    """Update the row of the record's drawing and model (`_drawing_update`), or insert it; the id. The stroke sent
    last wins, not the one answered last (two in flight at once stored an earlier, partial picture: a probe, session
    45): a record older than the row (`timestamp`: its request's arrival) leaves it, its label given to the row."""
    row = record.to_row()
    stored = update_else_upsert(conn, _UPDATE_DRAWING, _upsert_statement(conn.dialect.name, returning=True), row)
    if stored is not None:
        return stored
    keys = {"dr": record.drawing_id, "m": record.model_name}
    if record.drawn_digit is not None:
        Repository._apply_labels(conn, _OF_DRAWING, [(keys, (record.drawn_digit, row["timestamp"]))])
    return conn.execute(select(T.c.id).where(_OF_DRAWING), keys).scalar_one()


#: SQLSTATEs of a transaction the database rolled back to break a cycle of locks (deadlock, serialization
#: failure): the same transaction again succeeds
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
DEADLOCK_TRIES = 3


def retry_deadlock(transaction: Callable[[], Any]) -> Any:
    """`transaction()`, run again (up to DEADLOCK_TRIES times in all) when the database rolled it back as
    a deadlock's victim; any other error, or the last deadlock, is raised."""
    for attempt in range(1, DEADLOCK_TRIES + 1):
        try:
            return transaction()
        except DBAPIError as exc:
            if attempt == DEADLOCK_TRIES or getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES:
                raise
            time.sleep(0.005 * attempt)


class Repository:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- writing -------------------------------------------------------------------------------------
    @staticmethod
    def _insert_one(conn, record: PredictionRecord) -> int:
        if record.drawing_id:
            return _upsert_drawing(conn, record)
        return conn.execute(_INSERT, record.to_row()).inserted_primary_key[0]

    def insert(self, record: PredictionRecord) -> int:
        """Insert one record (or update its drawing's row) and return its id; a uid that is already
        stored returns the existing id."""
        try:
            with self.engine.begin() as conn:
                return self._insert_one(conn, record)
        except IntegrityError:
            existing = self.id_for_uid(record.uid)
            if existing is None:
                raise
            return existing

    def insert_many(self, records: list[PredictionRecord]) -> list[int]:
        """Insert records in one transaction (one commit, one fsync) and return their ids, in order; a
        record of a drawing already stored updates that drawing's row. Raises IntegrityError, inserting
        nothing, when a uid is already stored.

        Drawings' rows are written in one order, (drawing, model), in every process: two API workers writing
        the same drawing's rows of two models in opposite orders deadlocked on PostgreSQL (a probe, session
        27: 14 of 200 answers unsaved, the store in outage mode). A deadlock left anyway is retried."""
        return retry_deadlock(lambda: self._insert_many(records))

    def _insert_many(self, records: list[PredictionRecord]) -> list[int]:
        with self.engine.begin() as conn:
            if any(r.drawing_id for r in records):
                order = sorted(range(len(records)), key=lambda i: (records[i].drawing_id or "", records[i].model_name))
                ids = [0] * len(records)
                for i in order:
                    ids[i] = self._insert_one(conn, records[i])
                return ids
            if len(records) == 1:
                return [conn.execute(_INSERT, records[0].to_row()).inserted_primary_key[0]]
            return list(conn.execute(_INSERT_RETURNING, [r.to_row() for r in records]).scalars())

    def insert_missing(self, conn, records: list[PredictionRecord]) -> int:
        """Insert, in order, the records whose uid is not stored yet (idempotent replay); returns how many.
        Two executemany at most (psycopg pipelines them: no round trip per record): the records without a
        drawing, and the drawings' records in order (each execution sees the ones before it, so a drawing's
        later prediction wins; one per record cost a round trip each). A drawing's record only replaces a
        row holding an earlier prediction (`_upsert_statement`): the earlier strokes'
        uids are no longer in the table, so they count as missing on a second replay of the same spool."""
        missing = not_stored(conn, T.c.uid, records)
        plain = [r.to_row() for r in missing if not r.drawing_id]
        drawings = [r.to_row() for r in missing if r.drawing_id]
        if plain:
            conn.execute(_INSERT, plain)
        if drawings:
            conn.execute(_upsert_statement(conn.dialect.name), drawings)
        return len(missing)

    def apply_feedback(self, conn, key: str, labels: dict[Any, Label]) -> None:
        """Many feedbacks at once, keyed by "uid" or "id" (executemany; unknown keys change nothing).
        A label is (a digit, NOT_A_DIGIT or None to clear, the time it was given); a row labelled later
        than that keeps its label."""
        self._apply_labels(conn, T.c[key] == bindparam("k"), [({"k": k}, d) for k, d in labels.items()])

    def apply_feedback_by_drawing(self, conn, labels: dict[tuple[str, str], Label]) -> None:
        """`apply_feedback` keyed by (drawing id, model name): the drawing's row, whichever stroke it holds."""
        self._apply_labels(conn, _OF_DRAWING, [({"dr": dr, "m": m}, d) for (dr, m), d in labels.items()])

    @staticmethod
    def _apply_labels(conn, where, keyed: list[tuple[dict[str, Any], Label]]) -> None:
        sets = [{**k, "d": d, "at": at} for k, (d, at) in keyed if d is not None and d != NOT_A_DIGIT]
        others = [{**k, "n": True if d == NOT_A_DIGIT else None, "at": at}
                  for k, (d, at) in keyed if d is None or d == NOT_A_DIGIT]  # fmt: skip
        d = bindparam("d", type_=Integer)
        at = bindparam("at", type_=DateTime)
        where = where & no_later_label(T.c.labelled_at)
        if sets:
            correct = case((T.c.predicted_digit == d, True), else_=False)
            stmt = update(T).where(where).values(drawn_digit=d, correct=correct, not_digit=None, labelled_at=at)
            conn.execute(stmt, sets)
        if others:
            n = bindparam("n", type_=Boolean)
            stmt = update(T).where(where).values(drawn_digit=None, correct=None, not_digit=n, labelled_at=at)
            conn.execute(stmt, others)

    def id_for_uid(self, uid: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(T.c.id).where(T.c.uid == uid))

    def set_feedback(self, id: int, label: int | None, *, conn=None) -> bool:
        """Label a row: a digit 0-9, NOT_A_DIGIT, or None to clear. False when there is no such row."""
        return self._feedback(T.c.id == id, label, conn)

    def set_feedback_by_uid(self, uid: str, label: int | None, *, conn=None) -> bool:
        return self._feedback(T.c.uid == uid, label, conn)

    def _feedback(self, where, label: int | None, conn) -> bool:
        stmt = update(T).where(where).values(**_label_values(label))
        if conn is not None:
            return conn.execute(stmt).rowcount > 0
        with self.engine.begin() as c:
            return c.execute(stmt).rowcount > 0

    def delete(self, id: int) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(T).where(T.c.id == id)).rowcount > 0

    def delete_older_than(self, days: float, *, now: datetime | None = None) -> int:
        """Retention: deletes the predictions older than `days`; returns how many (read numbers:
        `numbers.delete_numbers_older_than`)."""
        cutoff = utc_naive(now or datetime.now(UTC)) - timedelta(days=days)
        with self.engine.begin() as conn:
            return conn.execute(delete(T).where(T.c.timestamp < cutoff)).rowcount

    # --- reading -------------------------------------------------------------------------------------
    def list(
        self,
        page: int = 1,
        page_size: int = 50,
        *,
        model: str | None = None,
        correct: bool | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> tuple[list[StoredPrediction], int]:
        """One page of history, newest first, and the total number of matching rows."""
        page = max(1, int(page))
        page_size = min(max(1, int(page_size)), MAX_PAGE_SIZE)
        where = history_filters(T, model=model, correct=correct, since=since, until=until)
        stmt = (
            select(*_SUMMARY)
            .where(*where)
            .order_by(T.c.timestamp.desc(), T.c.id.desc())
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(T).where(*where))
            rows = [_summary(r) for r in conn.execute(stmt)]
        return rows, int(total or 0)

    def get(self, id: int) -> StoredPrediction | None:
        return self._get(T.c.id == id)

    def get_by_uid(self, uid: str) -> StoredPrediction | None:
        """The row holding this uid (a drawing's row holds its latest stroke's), or None."""
        return self._get(T.c.uid == uid)

    def get_by_drawing(self, drawing_id: str, model_name: str) -> StoredPrediction | None:
        """The drawing's row for this model (it holds the drawing's latest stroke), or None."""
        return self._get((T.c.drawing_id == drawing_id) & (T.c.model_name == model_name))

    def _get(self, where) -> StoredPrediction | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_SUMMARY).where(where)).first()
        return None if row is None else _summary(row)

    def get_image(self, id: int, kind: str = "input") -> bytes | None:
        if kind not in _IMAGE_COLUMNS:
            raise ValueError(f"kind must be one of {sorted(_IMAGE_COLUMNS)}")
        with self.engine.connect() as conn:
            value = conn.scalar(select(_IMAGE_COLUMNS[kind]).where(T.c.id == id))
        return None if value is None else bytes(value)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(T)))

    def stats(self, model: str | None = None) -> dict[str, dict[str, Any]]:
        """Per model: predictions, labelled, correct, accuracy, 10x10 confusion matrix (rows = true digit,
        columns = predicted) and accuracy per day (UTC). One grouped query each: no row is read twice."""
        where = [] if model is None else [T.c.model_name == model]
        cells = (
            select(T.c.model_name, T.c.drawn_digit, T.c.predicted_digit, func.count())
            .where(*where)
            .group_by(T.c.model_name, T.c.drawn_digit, T.c.predicted_digit)
        )
        day = func.date(T.c.timestamp)
        daily = (
            select(
                T.c.model_name,
                day,
                func.count(),
                func.sum(case((T.c.drawn_digit == T.c.predicted_digit, 1), else_=0)),
            )
            .where(T.c.drawn_digit.is_not(None), *where)
            .group_by(T.c.model_name, day)
            .order_by(T.c.model_name, day)
        )
        out: dict[str, dict[str, Any]] = {}

        def entry(name: str | None) -> dict[str, Any]:
            key = name if name is not None else UNKNOWN_MODEL
            if key not in out:
                out[key] = {
                    "predictions": 0,
                    "labelled": 0,
                    "correct": 0,
                    "accuracy": None,
                    "confusion_matrix": [[0] * 10 for _ in range(10)],
                    "daily": [],
                }
            return out[key]

        with self.engine.connect() as conn:
            for name, drawn, predicted, n in conn.execute(cells):
                e = entry(name)
                e["predictions"] += n
                if drawn is None:
                    continue
                e["labelled"] += n
                if drawn == predicted:
                    e["correct"] += n
                if 0 <= drawn <= 9 and predicted is not None and 0 <= predicted <= 9:
                    e["confusion_matrix"][drawn][predicted] += n
            for name, d, n, ok in conn.execute(daily):
                ok = int(ok or 0)
                entry(name)["daily"].append(
                    {"date": str(d), "labelled": n, "correct": ok, "accuracy": ok / n}
                )
        for e in out.values():
            if e["labelled"]:
                e["accuracy"] = e["correct"] / e["labelled"]
        return out

    def labelled_after(self, last_id: int, since: datetime | None = None) -> int:
        """How many distinct images among the rows after id `last_id`, or labelled after `since` (naive UTC: an
        older drawing labelled or relabelled later), carry a digit label: new material for `digitlab learn` (an
        image posted again, or stored once per model that answered it, is one sample there and counts once)."""
        new = T.c.id > last_id if since is None else or_(T.c.id > last_id, T.c.labelled_at > since)
        stmt = select(func.count(T.c.processed_png.distinct())).where(
            new, T.c.drawn_digit.between(0, 9), T.c.processed_png.is_not(None)
        )
        with self.engine.connect() as conn:
            return int(conn.scalar(stmt))

    def labelled_images(self, batch: int = 500) -> Iterator[tuple[int, bytes]]:
        """(true digit, 28x28 PNG) per labelled drawing, oldest first (the export): a drawing is stored once
        per model that answered it (Draw after switching models, Compare, `model=all`), and is one sample,
        with the label given last; records without a drawing id, one per distinct image and label. An image
        labelled with different digits is left out altogether, as learning leaves it out (two passes)."""
        keep = self._latest_record_per_drawing()

        def kept() -> Iterator[tuple[int, bytes, bytes]]:
            seen: set[tuple[int, bytes]] = set()
            for id_, _, drawing, digit, png in self._labelled_rows(batch):
                key = (digit, hashlib.sha256(png).digest())
                if (id_ not in keep) if drawing is not None else key in seen:
                    continue
                seen.add(key)
                yield digit, key[1], png

        labels: dict[bytes, set[int]] = defaultdict(set)
        for digit, digest, _ in kept():
            labels[digest].add(digit)
        for digit, digest, png in kept():
            if len(labels[digest]) == 1:
                yield digit, png

    def _latest_record_per_drawing(self) -> set[int]:
        """Ids of the labelled records to export for drawings: per drawing id the one labelled last."""
        stmt = select(T.c.id, T.c.drawing_id, T.c.labelled_at).where(
            T.c.drawing_id.is_not(None), T.c.drawn_digit.between(0, 9), T.c.processed_png.is_not(None)
        )
        best: dict[str, tuple[datetime, int]] = {}
        with self.engine.connect() as conn:
            for id_, drawing, at in conn.execute(stmt):
                rank = (at or datetime.min, id_)
                if drawing not in best or rank > best[drawing]:
                    best[drawing] = rank
        return {id_ for _, id_ in best.values()}

    def labelled_drawings(self, batch: int = 500) -> Iterator[tuple[int, str | None, int, bytes]]:
        """(id, session id, true digit, 28x28 PNG) of every prediction labelled with a digit, oldest first,
        fetched in id-keyed batches so an export or a learning run never holds the whole table in memory."""
        return ((id_, session, digit, png) for id_, session, _, digit, png in self._labelled_rows(batch))

    def _labelled_rows(self, batch: int) -> Iterator[tuple[int, str | None, str | None, int, bytes]]:
        """(id, session id, drawing id, true digit, 28x28 PNG) of every record labelled with a digit."""
        last = 0
        while True:
            stmt = (
                select(T.c.id, T.c.session_id, T.c.drawing_id, T.c.drawn_digit, T.c.processed_png)
                .where(T.c.id > last, T.c.drawn_digit.is_not(None), T.c.processed_png.is_not(None))
                .order_by(T.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            for id_, session, drawing, digit, png in rows:
                last = id_
                if 0 <= digit <= 9:
                    yield id_, session, drawing, digit, bytes(png)
