"""Feedback that reaches the database before the record it names.

During an outage every API process (worker or replica) spools to its own file, and each file is replayed
on its own. A person's label goes to whichever worker their request reaches, so it can be replayed
before their prediction, which still waits in another worker's spool. Such a label is not dropped: it
waits in `pending_feedback` and is applied when its record is replayed (same transaction), or by the
next sweep (`take_resolvable`) if the two replays ran at the same time. Labels whose record never comes
are dropped after `MAX_AGE`, with a log line. At most `max_waiting` labels wait (the setting
`DIGITLAB_MAX_WAITING_LABELS`, `MAX_WAITING` by default): a label by the uid of a record that never comes waits a
day, so a client could fill the table with made-up uids. Past the cap a label given now is refused
(`WaitingLabelsFull`, the API's 503 `too_many_waiting_labels`) and one replayed from a spool is dropped and
logged; the labels already waiting stay.

A label by the uid of a stroke that a later stroke of the same drawing has replaced (its uid is no
longer in the table) goes to the drawing's row: `replayed_strokes` remembers the drawing of every
stroke replayed from a spool (`remember_strokes`, `stroke_drawings`), for as long as labels wait.

Targets: "prediction" (user_predictions, label = digit, NOT_A_DIGIT or None) and "number" (read_numbers,
label = the true text); each label travels with the time it was given, (label, at), so that a label
replayed late never replaces one given after it. Only parameterised statements.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from digitlab.errors import DigitlabError
from digitlab.store.models import NUMBERS, PENDING, STROKES
from digitlab.store.models import TABLE as PREDICTIONS
from digitlab.store.records import utc_now

log = logging.getLogger("digitlab.store")

#: a label whose record has not arrived after this long is dropped (its record was never stored)
MAX_AGE = timedelta(days=1)
#: at most this many labels wait for their records (the default of `Settings.max_waiting_labels`)
MAX_WAITING = 10_000
_TABLES = {"prediction": PREDICTIONS, "number": NUMBERS}
_CHUNK = 500  # uids per IN (...) list
_LOCK_KEY = 0x6469676974_01  # the advisory lock of `lock_waiting` ("digit", 1)


class WaitingLabelsFull(DigitlabError):
    """A label by the uid of a record not stored (yet) that would pass the cap of waiting labels."""

    code = "too_many_waiting_labels"

    def __init__(self, cap: int):
        super().__init__(
            f"Too many answers already wait for drawings that are not stored (yet) (at most {cap:,} are kept), so "
            "this one was not kept: send it again once its drawing is stored."
        )


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _dumps(label: tuple[Any, datetime]) -> str:
    value, at = label
    return json.dumps({"value": value, "at": at.isoformat()})


def _loads(text: str, created_at: datetime) -> tuple[Any, datetime]:
    """(label, when it was given); a row written before labels carried their time: its arrival time."""
    data = json.loads(text)
    if isinstance(data, dict) and "at" in data:
        return data["value"], datetime.fromisoformat(data["at"])
    return data, created_at


def stored_uids(conn, target: str, uids: Iterable[str]) -> set[str]:
    """The uids among `uids` that a row of `target`'s table holds."""
    column = _TABLES[target].c.uid
    found: set[str] = set()
    for chunk in _chunks(list(dict.fromkeys(uids))):
        found.update(conn.scalars(select(column).where(column.in_(chunk))))
    return found


def waiting(conn) -> int:
    """How many labels wait in `pending_feedback`."""
    return int(conn.scalar(select(func.count()).select_from(PENDING)))


def lock_waiting(conn) -> None:
    """Hold, until this transaction ends, the lock under which labels are counted and parked. Without
    it two workers replaying their spools at once each counted the other's labels as not there (not committed
    yet) and together parked twice the cap (a probe: 40 of 20). SQLite: the file's write lock, taken by a write
    that changes nothing (a count before it saw what was committed before the other writer's commit). Take it
    before the transaction locks any row (`store._drain_batch`): every taker then waits in the same order."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.execute(delete(PENDING).where(PENDING.c.id == -1))


def keep_unmatched(
    conn, target: str, labels: dict[str, Any], cap: int | None = None, *, refuse: bool = False
) -> dict[str, Any]:
    """Split labels keyed by uid: those whose record is stored are returned (to be applied now); the
    others wait in `pending_feedback`, up to `cap` waiting in all: past it, `refuse` raises `WaitingLabelsFull`
    (nothing kept), else the labels past it are dropped and logged (those waiting already stay)."""
    present = stored_uids(conn, target, labels)
    waiting_now = [k for k in labels if k not in present]
    if waiting_now and cap is not None:
        lock_waiting(conn)
        room = max(0, cap - waiting(conn))
        if len(waiting_now) > room:
            if refuse:
                raise WaitingLabelsFull(cap)
            log.warning("%d spooled label(s) for records not stored dropped: %d labels wait already (the most "
                        "kept, DIGITLAB_MAX_WAITING_LABELS)", len(waiting_now) - room, cap)  # fmt: skip
            waiting_now = waiting_now[:room]
    if waiting_now:
        now = utc_now()
        conn.execute(
            insert(PENDING),
            [{"created_at": now, "target": target, "uid": k, "label": _dumps(labels[k])} for k in waiting_now],
        )
    return {k: v for k, v in labels.items() if k in present}


def take(conn, target: str, uids: Iterable[str]) -> dict[str, Any]:
    """The waiting labels of these records (per uid the one given last, whichever spool parked it
    first), removed from `pending_feedback`."""
    out: dict[str, Any] = {}
    for chunk in _chunks(list(dict.fromkeys(uids))):
        where = (PENDING.c.target == target) & PENDING.c.uid.in_(chunk)
        rows = conn.execute(
            select(PENDING.c.uid, PENDING.c.label, PENDING.c.created_at).where(where).order_by(PENDING.c.id)
        ).all()
        if rows:
            out = latest_per_key([*out.items(), *((uid, _loads(label, created)) for uid, label, created in rows)])
            conn.execute(delete(PENDING).where(where))
    return out


def latest_per_key(items: Iterable[tuple[Any, tuple[Any, datetime]]]) -> dict[Any, tuple[Any, datetime]]:
    """{key: (label, at)} keeping, per key, the label given last (a tie: the later item)."""
    out: dict[Any, tuple[Any, datetime]] = {}
    for key, label in items:
        if key not in out or label[1] >= out[key][1]:
            out[key] = label
    return out


def remember_strokes(conn, target: str, strokes: list[tuple[str, str, str | None]]) -> None:
    """Note the drawing of replayed strokes: (uid, drawing id, model name or None for a number); a uid
    already noted (a spool replayed twice) is left as it is."""
    known = set()
    for chunk in _chunks([uid for uid, _, _ in strokes]):
        known.update(conn.scalars(select(STROKES.c.uid).where(STROKES.c.target == target, STROKES.c.uid.in_(chunk))))
    now = utc_now()
    rows = {uid: {"created_at": now, "target": target, "uid": uid, "drawing_id": drawing, "model_name": model}
            for uid, drawing, model in strokes if uid not in known}  # fmt: skip
    if rows:
        conn.execute(insert(STROKES), list(rows.values()))


def stroke_drawings(conn, target: str, uids: Iterable[str]) -> dict[str, Any]:
    """{uid: the row it lands on} of the replayed strokes among `uids`: (drawing id, model name) for a
    prediction, the drawing id for a number (the keys of `apply_feedback_by_drawing` / `apply_true_text`)."""
    out: dict[str, Any] = {}
    for chunk in _chunks(list(dict.fromkeys(uids))):
        rows = conn.execute(
            select(STROKES.c.uid, STROKES.c.drawing_id, STROKES.c.model_name).where(
                STROKES.c.target == target, STROKES.c.uid.in_(chunk)
            )
        ).all()
        out.update({uid: (drawing, model) if target == "prediction" else drawing for uid, drawing, model in rows})
    return out


def take_resolvable(conn) -> dict[str, dict[str, Any]]:
    """{target: {uid: label}} of every waiting label whose record is stored now, or whose stroke was
    replayed (`stroke_drawings`) (removed from the table),
    after dropping the labels older than MAX_AGE. For the race where a label and its record were replayed
    by two processes at once, neither seeing the other's uncommitted row."""
    cutoff = utc_now() - MAX_AGE
    conn.execute(delete(STROKES).where(STROKES.c.created_at < cutoff))
    if not conn.scalar(select(func.count()).select_from(PENDING)):
        return {}
    expired = conn.execute(delete(PENDING).where(PENDING.c.created_at < cutoff)).rowcount
    if expired:
        log.warning("%d spooled label(s) dropped: their records never reached the database in %s", expired, MAX_AGE)
    out = {}
    for target, table in _TABLES.items():
        arrived = PENDING.c.uid.in_(select(table.c.uid)) | PENDING.c.uid.in_(
            select(STROKES.c.uid).where(STROKES.c.target == target)
        )
        uids = conn.scalars(select(PENDING.c.uid).where(PENDING.c.target == target, arrived)).all()
        if uids:
            out[target] = take(conn, target, uids)
    return out
