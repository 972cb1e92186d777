"""`PredictionStore`: the repository plus the outage behaviour the API relies on.

Two modes:
- database mode: `add()` inserts through one writer thread that commits whatever has queued up as one
  transaction (group commit): under load, many predictions share one commit and one fsync;
- spool mode: `add()` appends to the durable spool and returns at once. Entered on the first database
  error (and at start-up when the database is away); left only when a background thread has replayed the
  whole spool, in order, into the database. While spooled records wait, new ones queue behind them, so the
  table receives records in the order they were answered. Replays are idempotent thanks to the record
  `uid` (UNIQUE) and to drawings' rows taking only a later prediction, so a crash between the database
  write and the spool truncation duplicates nothing and brings no earlier stroke back.

Read numbers (`add_number`, `set_number_feedback`; table `read_numbers`) take the same path: direct
writes in database mode, the same spool (operations `number`, `number_feedback`) in spool mode.

Reads (history, images, stats, export, deletion) need the database and raise `DatabaseUnavailableError`
(code `database_unavailable`) during an outage.

Kept as one piece (over 500 lines): the writer thread, the spool and the outage switch share one lock
and one ordering guarantee; split apart, each half would need the other's internals.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import IO, Any, Self

from sqlalchemy import text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from digitlab.errors import DigitlabError
from digitlab.store import export, numbers, pending
from digitlab.store.coalesce import Coalesced
from digitlab.store.db import DatabaseUnavailableError, make_engine, upgrade
from digitlab.store.numbers import NumberFeedbackResult, NumberRecord
from digitlab.store.records import AddResult, PredictionRecord, StoredPrediction, check_label, utc_now
from digitlab.store.repository import Repository
from digitlab.store.spool import REJECTED_FILE, Spool
from digitlab.store.versions import VersionStore
from digitlab.store.writer import GroupCommit, WriteSkipped, WriteTimedOut

log = logging.getLogger("digitlab.store")


#: SQLSTATEs that mean "not writable right now" although they do not come as OperationalError: a read-only
#: transaction (25006: a PostgreSQL standby during a failover, or the database set read-only).
_OUTAGE_SQLSTATES = frozenset({"25006"})
#: 42P01 and 42703, SQLite's "no such table" and "no such column" / "has no column named" (`schema_missing`): the tables
#: are gone or older than the code (the database was re-created empty, or restored from a dump taken before a
#: migration). An outage too: the store migrates it again and replays its spool into it. Each spooled line was
#: set aside in rejected.jsonl as "refused" before, for good (805 answered predictions in 20 s of a restored
#: dump), and /health said `spool: 0`.
_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})
_SCHEMA_MESSAGES = ("no such table", "no such column", "has no column named")


def _lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL gave up a lock wait (`lock_timeout`, 55P03): the database answers, a transaction of another
    process holds the lock. A spool replay that waited 3 s for the labels' lock (`pending.lock_waiting`), held by
    the other worker's replay after an outage, took it for an outage: the store said "unavailable" and answered
    /stats 503 with the database up, and backed off (an API probe, session 50: 3 and 5 times per catch-up, which
    took 23 s after the database was back)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"


def schema_missing(exc: BaseException) -> bool:
    """The database lacks a table or column the code uses: it needs migrating (again)."""
    orig = getattr(exc, "orig", None)
    message = str(orig or "")
    return getattr(orig, "sqlstate", None) in _SCHEMA_SQLSTATES or any(m in message for m in _SCHEMA_MESSAGES)


#: a write the database has not answered in this many seconds is spooled (its request answers), and the
#: store goes to spool mode: a frozen server or a paused container accepts connections and answers nothing
WRITE_DEADLINE = 5.0
#: a closing store waits this long for its spool's replay to finish (it is safe to leave: see `close`)
DRAIN_STOP_SECONDS = 2.0
#: /health waits this long for the database's `SELECT 1`
HEALTH_PROBE_SECONDS = 1.5
#: SQLite: /health waits this long for the write lock (a write holds it for milliseconds) before it says the
#: database takes no writes
SQLITE_LOCK_PATIENCE = 0.5
#: a direct call (feedback, a read, a read number) not answered in this many seconds makes the store ask the
#: database for a `SELECT 1`: answered, the call may go on (a slow export); not, the database is away
DIRECT_PATIENCE = 3.0
#: direct reads at once; more wait for a free thread (with the same patience)
DIRECT_THREADS = 8
#: direct writes (feedback, read numbers) at once, in threads of their own: queued behind reads (12 exports at once)
#: a label outwaited its write deadline, was spooled, and the store went to spool mode with the database up:
#: /health said "unavailable" (a probe, session 49). The pool (5 + 10) has a connection for each thread.
DIRECT_WRITE_THREADS = 4


def _says_locked(error: BaseException | None) -> bool:
    """SQLite's words for another connection holding the write lock ("database is locked", "... busy")."""
    return "locked" in str(error) or "busy" in str(error)


class WriteStalled(TimeoutError):
    """The write deadline ran out (`GroupCommit`'s watchdog): the database did not answer a write in time."""


def is_outage(exc: BaseException) -> bool:
    """Errors that mean "the database is away", as opposed to "the database refuses this statement"."""
    if isinstance(exc, DBAPIError):
        return (
            bool(exc.connection_invalidated)
            or isinstance(exc, OperationalError | InterfaceError)
            or getattr(exc.orig, "sqlstate", None) in _OUTAGE_SQLSTATES
            or schema_missing(exc)
        )
    return isinstance(exc, DisconnectionError | PoolTimeoutError)


def database_identity(url) -> str:
    """Which database a spool's lines are for: the URL without its password; a SQLite file by its absolute path."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{Path(url.database).resolve() if url.database and url.database != ':memory:' else url.database}"
    return url.render_as_string(hide_password=True)


class PredictionStore:
    """Thread-safe; one per process. `start()` never raises because the database is down."""

    def __init__(
        self,
        url: str,
        spool_dir: Path | str,
        *,
        connect_timeout: float = 2.0,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        batch_size: int = 200,
        orphan_scan_interval: float = 30.0,
        write_deadline: float | None = WRITE_DEADLINE,
        max_waiting_labels: int = pending.MAX_WAITING,
    ):
        self.url = url
        self.max_waiting_labels = max_waiting_labels  # labels by uid waiting for a record not stored (yet)
        self.write_deadline = write_deadline
        self.engine = make_engine(url, connect_timeout=connect_timeout)
        self.repo = Repository(self.engine)
        self.versions = VersionStore(self.engine)
        self.writer = GroupCommit(
            self.repo, skip=lambda: self._spool_mode, deadline=write_deadline,
            on_stall=lambda: self._mark_down(WriteStalled(f"the database did not answer a write in {write_deadline:g} s")),
        )  # fmt: skip
        self._prober = ThreadPoolExecutor(1, thread_name_prefix="digitlab-store-probe")  # one probe at a time
        self._direct = ThreadPoolExecutor(DIRECT_THREADS, thread_name_prefix="digitlab-store-direct")
        self._direct_writes = ThreadPoolExecutor(DIRECT_WRITE_THREADS, thread_name_prefix="digitlab-store-direct-write")
        self._probe: Future | None = None
        self._stats = Coalesced()  # identical stats reads arriving together share one query (`coalesce`)
        self.spool = Spool(Path(spool_dir), database_identity(self.engine.url))
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.batch_size = batch_size
        self.orphan_scan_interval = orphan_scan_interval
        self._mode_lock = threading.Lock()  # mode decisions + spool appends happen under it
        self._spool_mode = True  # until the database has been reached and migrated
        self._db_ok = False
        self._catching_up = False  # the database is back and takes the spool's lines: spool mode ends soon
        self._said_up = False  # the log's last word on the database was "available" (`_mark_up`)
        self._migrated = False
        self._orphans: list[Spool] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_probe = 0.0
        # SQLite's write lock held by another process at the last probe (`health`): writes go to the spool at once
        # (each worker's next write waited out the 5 s write deadline, also after /health had said "unavailable":
        # every first prediction took 5 s after a start with the file locked; a probe, session 49); cleared by
        # the next probe that gets the lock or the spool's next replay
        self._write_locked = False
        self._last_write_failure: float | None = None  # (`note_write`)

    # --- life cycle ----------------------------------------------------------------------------------
    def start(self) -> Self:
        """Open the spool, migrate the database if it is reachable, start the drain thread."""
        self.spool.open()
        self._orphans = self.spool.orphans()
        try:
            self._ensure_ready()
        except Exception as exc:  # noqa: BLE001 - whatever stops us, start in spool mode and retry
            log.warning("database unavailable at start, spooling to %s: %s", self.spool.dir, _one_line(exc))
            self._mark_down(exc)
        else:
            self._mark_up()
            with self._mode_lock:
                self._spool_mode = self.spool.pending > 0
        self.writer.start()
        self._thread = threading.Thread(target=self._run, name="digitlab-store-drain", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the drain thread and release the spool (kept on disk when not empty, for the next start)."""
        self.writer.close(timeout)  # commits what is queued first
        self._stop.set()
        self._wake.set()
        if self._thread is not None:  # (a replay stuck on a frozen database loses nothing: its lines stay spooled
            self._thread.join(min(timeout, DRAIN_STOP_SECONDS))  # until a replay is confirmed, and uids dedupe)
        for orphan in self._orphans:
            orphan.close(remove_if_empty=False)
        self._orphans = []
        self.spool.close()
        self._prober.shutdown(wait=False)
        self._direct.shutdown(wait=False, cancel_futures=True)
        self._direct_writes.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_ready(self) -> None:
        if not self._migrated:
            upgrade(self.engine)
            self._migrated = True
        else:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

    def _mark_up(self, *, announce: bool = True) -> None:
        """Reads go to the database again. `announce`: say so in the log, once per outage. The drain thread
        announces only after a replay went through: a database that answers reads but takes no writes (SQLite's
        write lock held by another process) was logged "available" and "unavailable" on every retry."""
        self._db_ok = True
        if announce and not self._said_up:
            log.info("database %s is available", self.engine.url.render_as_string(hide_password=True))
            self._said_up = True

    def _mark_down(self, exc: BaseException, *, wake: bool = True) -> None:
        if self._db_ok and self._sqlite_busy(exc):  # the file answers; another process holds its write lock:
            with self._mode_lock:  # writes wait in the spool, reads go on (WAL; `_sqlite_busy`)
                was_locked, self._write_locked, self._spool_mode = self._write_locked, True, True
                self._catching_up = False
            if not was_locked:
                log.warning("database takes no writes (another process holds the SQLite file's write lock): "
                            "spooling predictions to %s, reads go on: %s", self.spool.dir, _one_line(exc))  # fmt: skip
            if wake:
                self._wake.set()
            return
        with self._mode_lock:
            was_ok, self._db_ok, self._spool_mode = self._db_ok, False, True
            self._catching_up = False
        if self._said_up:
            self._said_up = False
            log.warning(
                "database unavailable, spooling predictions to %s: %s", self.spool.dir, _one_line(exc)
            )
        if was_ok and wake:  # start the drain thread's retry schedule
            self._wake.set()

    # --- writing -------------------------------------------------------------------------------------
    def add(self, record: PredictionRecord) -> AddResult:
        """Store a prediction: in the database, or in the spool when the database is away. Never raises
        because of the database."""
        return self.add_many([record])[0]

    def add_many(self, records: list[PredictionRecord]) -> list[AddResult]:
        """Store several predictions (e.g. one request's `model=all` answers) in one transaction."""
        return self.add_many_async(records).result()

    def add_many_async(self, records: list[PredictionRecord]) -> Future:
        """`add_many` that returns at once: a Future of the `AddResult`s, done once the records are
        committed or spooled. The API awaits it on its event loop, so a slow database holds no thread."""
        done: Future = Future()
        with self._mode_lock:
            if self._spooling():
                done.set_result(self._spool_adds(records))
                return done
        self.writer.submit(records).add_done_callback(lambda committed: self._settle(records, committed, done))
        return done

    def _settle(self, records: list[PredictionRecord], committed: Future, done: Future) -> None:
        """Runs in the writer thread: hands `_outcome` to the waiter (an error too, e.g. a full disk)."""
        try:
            done.set_result(self._outcome(records, committed))
        except BaseException as exc:  # noqa: BLE001 - the waiter must hear it
            if not done.done():
                done.set_exception(exc)

    def _outcome(self, records: list[PredictionRecord], committed: Future) -> list[AddResult]:
        """The commit's ids, or the spool when the database failed."""
        try:
            ids = committed.result()
        except WriteSkipped:  # the database went away while these waited in the writer's queue
            with self._mode_lock:
                return self._spool_adds(records)
        except SQLAlchemyError as exc:
            if not is_outage(exc):  # the database refuses the batch: each record on its own, to tell which
                return [self._add_alone(record) for record in records]
            for record in records:
                self._spool_after_error({"op": "add", "record": record.to_json()}, exc)
            return [AddResult(None, r.uid, "spool") for r in records]
        return [AddResult(id, r.uid, "database") for id, r in zip(ids, records, strict=True)]

    def _add_alone(self, record: PredictionRecord) -> AddResult:
        """A record whose batch the database refused (a constraint, a trigger, a permission: no outage), tried
        alone: stored, or set aside for good (`_refuse`). It was spooled and answered "stored" before, then set
        aside by the replay, while /health said `ok` and feedback by its uid found nothing (an API probe)."""
        op = {"op": "add", "record": record.to_json()}
        try:
            stored = self._bounded(self.repo.insert, record, deadline=self.write_deadline)
            return AddResult(stored, record.uid, "database")
        except WriteTimedOut:
            self._spool_after_timeout(op)
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                return self._refuse(op, exc)
            self._spool_after_error(op, exc)
        return AddResult(None, record.uid, "spool")

    def _refuse(self, op: dict[str, Any], exc: BaseException) -> AddResult:
        """A record the database refuses for another reason than an outage: kept in rejected.jsonl beside the
        spool (the operator decides), answered as not stored (`refused`), and /health says `failing`."""
        self.spool.reject(json.dumps(op, separators=(",", ":")).encode(), _one_line(exc))
        log.error("database refused a record, kept in %s: %s", self.spool.dir / REJECTED_FILE, _one_line(exc))
        self.note_write(False)
        return AddResult(None, op["record"]["uid"], "refused")

    def _spooling(self) -> bool:
        """Do writes go to the spool now (the caller holds `_mode_lock`)? In spool mode, and while another process
        holds SQLite's write lock (`_write_locked`): spool mode then, the drain thread told."""
        if not self._spool_mode and self._write_locked:
            self._spool_mode = True
            self._wake.set()
        return self._spool_mode

    def _spool_adds(self, records: list[PredictionRecord]) -> list[AddResult]:
        """Append the records to the spool (the caller holds `_mode_lock`). The store is in spool mode while
        its spool has lines, and the drain thread is told: records skipped by the writer, spooled after the
        drain had switched back, waited for the next outage."""
        for record in records:
            self.spool.append({"op": "add", "record": record.to_json()})
        self._spool_mode = True
        self._wake.set()
        return [AddResult(None, r.uid, "spool") for r in records]

    def set_feedback(self, id: int, true_digit: int | None) -> bool:
        """Record what the user meant: a digit, NOT_A_DIGIT, or None to clear. False if there is no such id;
        during an outage the feedback is spooled (and True returned): applied after the records before it."""
        digit = check_label(true_digit)
        return self._feedback(
            {"op": "feedback", "id": int(id), "digit": digit, "at": _stamp()},
            lambda: self.repo.set_feedback(int(id), digit),
        )

    def set_feedback_by_uid(self, uid: str, true_digit: int | None) -> bool:
        """Same, by the record's uid: the only handle on a record that is still in the spool."""
        digit = check_label(true_digit)
        return self._feedback(
            {"op": "feedback", "uid": str(uid), "digit": digit, "at": _stamp()},
            lambda: self.repo.set_feedback_by_uid(str(uid), digit),
        )

    def _feedback(self, op: dict[str, Any], direct) -> bool:
        with self._mode_lock:
            if self._spooling():
                self._spool_label(op)
                return True
        try:
            return self._bounded(lambda: direct() or bool(self._wait_for_record(op)), deadline=self.write_deadline)
        except WriteTimedOut:  # (applied twice, should the stuck write land after all: the same label)
            self._spool_after_timeout(op)
            return True
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            self._spool_after_error(op, exc)
            return True

    def _spool_label(self, op: dict[str, Any]) -> None:
        """Append a label during an outage (the caller holds `_mode_lock`). One by uid may name a record that
        never comes, and waits a day for it once replayed: past `max_waiting_labels` of them in this spool
        `WaitingLabelsFull` (nothing appended; those spooled already stay). A label by the uid of a record this
        spool holds is always taken (and not counted): its record comes."""
        if "uid" in op and self.spool.labels_by_uid >= self.max_waiting_labels and not self.spool.holds(op["uid"]):
            raise pending.WaitingLabelsFull(self.max_waiting_labels)
        self.spool.append(op)

    def _wait_for_record(self, op: dict[str, Any]) -> Any:
        """Feedback by the uid of a record that is not stored: a stroke replayed from a spool and replaced
        since by a later stroke labels its drawing's row (that row's key is returned: (drawing id, model) or a
        number's drawing id); if another process still has a spool to replay (this one is back from an outage
        before it), the record may be there: the label waits in `pending_feedback` for it (True). Otherwise
        there is no such record (False)."""
        if "uid" not in op:
            return False
        target = "number" if op["op"] in NUMBER_OPS else "prediction"
        label = (op["true_text"] if target == "number" else op["digit"], _given_at(op))
        with self.engine.begin() as conn:
            drawing = pending.stroke_drawings(conn, target, [op["uid"]])
            if drawing:  # a stroke replayed after an outage, replaced since by a later one: its drawing's row
                self._label(conn, target, {op["uid"]: label}, drawing)
                return drawing[op["uid"]]
            if not self.spool.siblings_pending():
                return False
            if pending.keep_unmatched(conn, target, {op["uid"]: label}, self.max_waiting_labels, refuse=True):
                # stored meanwhile: label it now
                self._label(conn, target, {op["uid"]: label}, {})
        return True

    def _spool_after_error(self, op: dict[str, Any], exc: SQLAlchemyError | TimeoutError) -> None:
        if isinstance(exc, TimeoutError) or is_outage(exc):  # (a timeout: a write its connection never answered)
            self._mark_down(exc)
        else:  # the database refused it: keep it anyway; the drain thread sets it aside in rejected.jsonl
            log.error("database refused a record, spooling it: %s", _one_line(exc))
            self._wake.set()
        with self._mode_lock:
            self._spool_mode = True
            self.spool.append(op)
        # the drain thread may have found the spool empty and switched back to database mode between
        # `_mark_down` and this append, then gone to sleep for 30 s (`orphan_scan_interval`): a worker spooled
        # 4,220 predictions for 30 s with the database up. Wake it: it drains and switches back.
        self._wake.set()

    def _spool_after_timeout(self, op: dict[str, Any]) -> None:
        """A direct write not answered within the write deadline: spooled, the store in spool mode, as the writer
        does with predictions (its connection hangs while new ones answer: the `SELECT 1` probe cannot tell)."""
        self._spool_after_error(op, TimeoutError(f"the database did not answer a write in {self.write_deadline:g} s"))

    # --- read numbers (table read_numbers): spooled like predictions, in the same file --------------------
    def add_number(self, record: NumberRecord) -> AddResult:
        """Store a read number (or update its drawing's row): in the database, or in the spool when the
        database is away. Blocking (the API calls it in a worker thread); never raises because of the
        database."""
        op = {"op": "number", "record": record.to_json()}
        with self._mode_lock:
            if self._spooling():
                self.spool.append(op)
                return AddResult(None, record.uid, "spool")
        try:
            stored = self._bounded(numbers.insert_number, self.engine, record, deadline=self.write_deadline)
            return AddResult(stored, record.uid, "database")
        except WriteTimedOut:  # as a prediction's write: a `/read` waited out a stuck connection (16-60 s in a probe)
            self._spool_after_timeout(op)  # (should the insert land after all, the replay skips its uid)
            return AddResult(None, record.uid, "spool")
        except IntegrityError as exc:  # its uid is stored already (cannot happen from the API: uids are fresh)
            existing = self._read(self._number_id, record.uid)
            if existing is None:  # no: the database refuses the row (a constraint, a trigger)
                return self._refuse(op, exc)
            return AddResult(existing, record.uid, "database")
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                return self._refuse(op, exc)
            self._spool_after_error(op, exc)
            return AddResult(None, record.uid, "spool")

    def _number_id(self, uid: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.scalar(numbers.select_id_by_uid(uid))

    def set_number_feedback(
        self, true_text: str, *, id: int | None = None, uid: str | None = None
    ) -> NumberFeedbackResult | None:
        """What was really written, on the number with this id or uid: the updated number, or None if there
        is no such number; during an outage the answer is spooled (applied after the numbers before it)."""
        key, value = ("id", int(id)) if uid is None else ("uid", str(uid))
        op = {"op": "number_feedback", key: value, "true_text": str(true_text), "at": _stamp()}
        with self._mode_lock:
            if self._spooling():
                self._spool_label(op)
                return NumberFeedbackResult("spool")
        def direct():
            row = numbers.set_true_text_where(self.engine, key, value, str(true_text))
            if row is not None:
                return row, False
            landed = self._wait_for_record(op)
            if isinstance(landed, str):  # a replaced stroke's drawing, labelled: its row (it said "queued")
                return numbers.get_number_of_drawing(self.engine, landed), False
            return None, bool(landed)

        try:
            row, waits = self._bounded(direct, deadline=self.write_deadline)
        except WriteTimedOut:
            self._spool_after_timeout(op)
            return NumberFeedbackResult("spool")
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            self._spool_after_error(op, exc)
            return NumberFeedbackResult("spool")
        if row is None:
            return NumberFeedbackResult("spool") if waits else None
        return NumberFeedbackResult("database", row)

    def delete(self, id: int) -> bool:
        return self._read(self.repo.delete, int(id))

    def delete_older_than(self, days: float) -> tuple[int, int]:
        """Retention: delete predictions and read numbers older than `days` days; returns how many of each."""
        if days < 1:
            raise DigitlabError(f"retention must be at least 1 day, got {days}", code="invalid_retention")
        deleted = self._read(self.repo.delete_older_than, days)
        return deleted, self._read(numbers.delete_numbers_older_than, self.engine, days)

    # --- reading -------------------------------------------------------------------------------------
    def _bounded(self, fn, *args, deadline: float | None = None, **kwargs):
        """`fn(*args, **kwargs)` in one of the store's threads, waited for as long as the database shows
        it is alive: a server that accepts connections and answers nothing (frozen, a paused container)
        hung feedback and every read for as long as it stayed so. Raises DisconnectionError (an outage)
        when the database does not answer a `SELECT 1` either, and WriteTimedOut after `deadline` s (a write
        whose connection hangs while new ones answer: the probe's `SELECT 1` cannot tell)."""
        # writes (they have a deadline) never queue behind reads: a slow export is no reason to spool a label
        future = (self._direct if deadline is None else self._direct_writes).submit(fn, *args, **kwargs)
        started = time.monotonic()
        while True:
            left = (math.inf if deadline is None else deadline) - (time.monotonic() - started)
            try:
                return future.result(timeout=max(0.0, min(left, DIRECT_PATIENCE)))
            except FutureTimeout:
                if left <= DIRECT_PATIENCE:  # (this wait took it to the deadline)
                    future.cancel()
                    raise WriteTimedOut from None
                if self._database_problem() is not None:
                    future.cancel()  # not started yet: it never will (it would act long after its answer)
                    raise DisconnectionError(
                        f"the database did not answer in {DIRECT_PATIENCE + HEALTH_PROBE_SECONDS:g} s"
                    ) from None

    def _database_problem(self) -> BaseException | None:
        """Why the database does not answer a `SELECT 1` within HEALTH_PROBE_SECONDS; None when it does.
        One probe at a time: callers share the one in flight."""
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = self._prober.submit(self._select_one)
        try:
            probe.result(timeout=HEALTH_PROBE_SECONDS)
        except FutureTimeout:
            return TimeoutError(f"the database did not answer in {HEALTH_PROBE_SECONDS:g} s")
        except SQLAlchemyError as exc:
            return exc
        return None

    def check_readable(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers a `SELECT 1` now: for an answer that
        promises a read without doing it (HEAD of the export said 200 while the database was down)."""
        problem = self._database_problem() if self._db_ok else None
        if problem is not None:
            self._mark_down(problem)  # (which clears `_db_ok`)
        if not self._db_ok:
            raise DatabaseUnavailableError("the prediction database is unavailable; try again shortly")

    def _read(self, fn, *args, **kwargs):
        if not self._db_ok:
            raise DatabaseUnavailableError("the prediction database is unavailable; try again shortly")
        try:
            return self._bounded(fn, *args, **kwargs)
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            self._mark_down(exc)
            raise DatabaseUnavailableError(
                "the prediction database is unavailable; try again shortly"
            ) from exc

    def list(self, page: int = 1, page_size: int = 50, **filters: Any) -> tuple[list[StoredPrediction], int]:
        """A page of history (newest first, no image bytes) and the total number of matching rows;
        `filters` as `Repository.list` takes them (model, correct, since, until)."""
        return self._read(self.repo.list, page, page_size, **filters)

    def with_database(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` (e.g. a `self.versions` method) with the store's outage handling: raises
        DatabaseUnavailableError, never a driver error, while the database is away."""
        return self._read(fn, *args, **kwargs)

    def promoted_versions(self) -> dict[str, tuple[str, str]]:
        """{model: (version, sha256)} promoted in the database (DatabaseUnavailableError during an outage)."""
        return self._read(self.versions.promoted)

    def load_version(self, name: str, version: str) -> tuple[dict, bytes]:
        """A learned version's manifest and verified artefact bytes."""
        return self._read(self.versions.load, name, version)

    def get(self, id: int) -> StoredPrediction | None:
        return self._read(self.repo.get, int(id))

    def get_by_uid(self, uid: str) -> StoredPrediction | None:
        return self._read(self.repo.get_by_uid, str(uid))

    def labelled_by_uid(self, uid: str) -> StoredPrediction | None:
        """The row a label by this uid lands on: its own, or, for a stroke replayed from a spool and replaced
        since by a later stroke, its drawing's row (`_wait_for_record`); None when neither is stored."""
        return self._read(self._labelled_by_uid, str(uid))

    def _labelled_by_uid(self, uid: str) -> StoredPrediction | None:
        row = self.repo.get_by_uid(uid)
        if row is not None:
            return row
        with self.engine.connect() as conn:
            drawing = pending.stroke_drawings(conn, "prediction", [uid]).get(uid)
        return None if drawing is None else self.repo.get_by_drawing(*drawing)

    def get_image(self, id: int, kind: str = "input") -> bytes | None:
        """PNG bytes of the submitted drawing (`input`) or of the 28x28 model input (`processed`)."""
        return self._read(self.repo.get_image, int(id), kind)

    def stats(self, model: str | None = None) -> dict[str, dict[str, Any]]:
        return self._stats.run(model, lambda: self._read(self.repo.stats, model))

    def count(self) -> int:
        return self._read(self.repo.count)

    def export_csv(self, out: Path | str | IO[str]) -> int:
        """Labelled drawings as CSV `label,pixel0..pixel783` (0-255, ink bright); returns the row count."""
        return self._read(export.write_csv, self._labelled(), out)

    def export_idx(self, directory: Path | str) -> int:
        """Labelled drawings as MNIST IDX files (`images-idx3-ubyte`, `labels-idx1-ubyte`)."""
        return self._read(export.write_idx, self._labelled(), directory)

    def _labelled(self) -> Iterator[tuple[int, bytes]]:
        """Labelled drawings, then the digits of confirmed numbers (`numbers.labelled_digit_crops`)."""
        from digitlab.store.numbers import labelled_digit_crops

        yield from self.repo.labelled_images()
        yield from labelled_digit_crops(self.engine)

    def health(self) -> dict[str, Any]:
        """{"database": "ok" | "unavailable" | "failing" | "catching_up", "spool": records waiting}: "ok" only
        while writes go to the database; "catching_up" while the database, back, takes the spool's lines; "spool" counts this process's spool, the ones it adopted and its siblings' (every worker
        of this data folder gives the same total). In database mode the database is probed (at most once a second) so an idle outage is
        noticed too."""
        now = time.monotonic()
        if self._db_ok and not self._spool_mode and now - self._last_probe > 1.0:
            self._last_probe = now
            problem = self._database_problem()  # bounded: a frozen server must not hang a health check
            if problem is not None:
                self._mark_down(problem)
            self._write_locked = problem is None and self._sqlite_write_locked()
        # spool mode means writes are not reaching the database (even when a probe's SELECT 1 works)
        ok = self._db_ok and not self._spool_mode and not self._write_locked
        beside = self.spool.waiting_beside({o.dir for o in tuple(self._orphans)})
        state = "ok" if ok else "unavailable"
        if self.writes_failing():  # records are dropped: the database refuses them, or in an outage the spool
            state = "failing"  # cannot take them (a full disk said "unavailable" while answers were `logged: false`)
        elif not ok and self._spool_mode and self._db_ok and self._catching_up and not self._write_locked:
            state = "catching_up"  # (under load "unavailable" was said for ~20 s after the database was back)
        elif ok and (beside or self.pending()):  # writes reach the database, but records of the outage still wait in
            state = "catching_up"  # a sibling's spool (it notices within its probe): "ok" misled a load balancer
        return {"database": state, "spool": self.pending() + beside}

    def _sqlite_busy(self, exc: BaseException) -> bool:
        """A SQLite write that met another connection's write lock: "database is locked" after the busy timeout, or
        the write deadline run out first (a local file has no network to lose). It marked the database down, and
        History, stats and lookups answered 503 until the lock went, though WAL lets them read (321 times in 12 s:
        an API probe, session 50)."""
        if self.engine.dialect.name != "sqlite":
            return False
        if isinstance(exc, WriteStalled):
            return True
        orig = getattr(exc, "orig", None)
        return isinstance(exc, OperationalError) and _says_locked(orig)

    def _sqlite_write_locked(self) -> bool:
        """SQLite: is the file's write lock held for longer than a write takes (another process, a long
        prune)? Each worker said what its own last write met: during such a lock /health alternated between
        "ok" and "unavailable" from one request to the next, as they reached one worker or another."""
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return False
        import sqlite3

        try:
            conn = sqlite3.connect(self.engine.url.database, timeout=SQLITE_LOCK_PATIENCE, isolation_level=None)
        except sqlite3.Error:
            return False  # (the SELECT 1 probe above answers for a file that cannot be opened)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock, waiting up to SQLITE_LOCK_PATIENCE for it
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            return _says_locked(exc)
        finally:
            conn.close()

    #: a failed write counts in /health ("failing") for this long, unless a write succeeds after it
    FAILING_FOR = 60.0

    def note_write(self, ok: bool) -> None:
        """How the last write of predictions ended (the API's recording calls it): a database that answers
        `SELECT 1` but takes no rows (disk full) said "ok" in /health while every answer was `logged: false`."""
        if ok:
            self._last_write_failure = None
        else:
            self._last_write_failure = time.monotonic()

    def writes_failing(self) -> bool:
        failed = self._last_write_failure
        return failed is not None and time.monotonic() - failed < self.FAILING_FOR

    def _select_one(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def pending(self) -> int:
        """Records and feedback waiting in the spool (this process's and adopted ones)."""
        return self.spool.pending + sum(o.pending for o in tuple(self._orphans))

    def wait_drained(self, timeout: float = 30.0) -> bool:
        """Block until the spool is empty and the store is back in database mode (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._spool_mode or self.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.1))
        return True

    # --- drain thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        retry = self.retry_initial
        next_scan = time.monotonic() + self.orphan_scan_interval
        while not self._stop.is_set():
            wait = self.orphan_scan_interval
            try:
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.orphan_scan_interval
                    self._orphans.extend(self.spool.orphans())
                    self._sweep_quietly()
                if self._spool_mode or self._orphans:
                    self._ensure_ready()
                    self._mark_up(announce=False)
                    self._drain_orphans()
                    self._drain_own()
                    self._mark_up()
                retry = self.retry_initial
                if self._spool_mode:
                    wait = 0  # more arrived while draining
            except Exception as exc:
                if _lock_timeout(exc) and self._db_ok:  # busy, not away: try again soon (`_lock_timeout`)
                    log.debug("the spool's replay waits for a lock: %s", _one_line(exc))
                    wait = self.retry_initial
                else:
                    if schema_missing(exc) and self._migrated:
                        log.warning("the database has no digitlab tables (re-created?): migrating it again")
                        self._migrated = False
                    elif not is_outage(exc) and self._migrated:
                        log.exception("draining the spool failed")
                    log.debug("drain attempt failed: %s", _one_line(exc))
                    self._mark_down(exc, wake=False)  # back off: do not cut our own wait short
                    wait = retry
                    retry = min(retry * 2, self.retry_max)
            with self._idle:
                self._idle.notify_all()
            if wait:
                self._wake.wait(wait)
            self._wake.clear()

    def _drain_own(self) -> None:
        """Replay in batches while adds keep appending; once a read finds nothing left, take the append lock and
        switch modes if still nothing was appended (else replay that too and try again: the window between the
        empty read and the lock is microseconds, so steady load does not keep the store in spool mode). The
        database is never written to under the append lock: the last lines were, and a replay waiting on the
        database (SQLite's write lock held by another process: its 5 s busy timeout) held every new record,
        label and `_mark_down` meanwhile: one prediction took 10 s (a probe, session 49)."""
        while not self._stop.is_set():
            if self._drain_batch(self.spool):
                continue
            with self._mode_lock:
                if self.spool.reset_if_drained():
                    self._spool_mode = False
                    log.info("spool drained, back to database mode")
                    break
        if not self._spool_mode:
            self._sweep_pending()

    def _drain_orphans(self) -> None:
        for orphan in list(self._orphans):
            while self._drain_batch(orphan):
                if self._stop.is_set():
                    return
            if orphan.reset_if_drained():
                log.info("replayed the spool left by a previous process in %s", orphan.dir)
                orphan.close()
                self._orphans.remove(orphan)
                self._sweep_pending()

    def _drain_batch(self, spool: Spool) -> int:
        """Replay up to `batch_size` lines in one transaction; returns how many (0: nothing pending)."""
        lines, end = spool.read(self.batch_size)
        if not lines:
            return 0
        ops = []
        for line in lines:
            try:
                ops.append((line, _parse(line)))
            except (ValueError, KeyError, TypeError) as exc:
                spool.reject(line, f"unreadable: {exc}")
                log.error("unreadable spool line kept in %s: %s", spool.dir, exc)
        try:
            with self.engine.begin() as conn:
                if any(op["op"] in ("feedback", "number_feedback") and "uid" in op for _, op in ops):
                    pending.lock_waiting(conn)  # (first: it may park labels; see there)
                self._apply(conn, [op for _, op in ops])
        except SQLAlchemyError as exc:
            if is_outage(exc):
                raise
            for line, op in ops:  # one refused line must not block the spool: retry one by one
                try:
                    with self.engine.begin() as conn:
                        self._apply(conn, [op])
                except SQLAlchemyError as exc2:
                    if is_outage(exc2):
                        raise
                    spool.reject(line, _one_line(exc2))
                    log.error("database refused a spooled line, kept in rejected.jsonl: %s", _one_line(exc2))
                    if op["op"] in ("add", "number"):  # a record answered "queued" is not stored: /health says so
                        self.note_write(False)
        spool.commit(end, len(lines))
        self._write_locked = False  # (it took writes)
        self._catching_up = True
        return len(lines)

    def _apply(self, conn, ops: list[dict[str, Any]]) -> None:
        """Apply spooled operations, each table's on their own (predictions and read numbers do not touch each
        other), in few runs (`_few_runs`: records in spool order, labels after them where the order cannot
        change the outcome), with few statements: a run of adds is one idempotent `insert_missing`, a run
        of feedback with the same key kind one executemany (within a run the last one per record wins, as it
        would one by one). Order matters where a later prediction (or reading) of a drawing takes over the
        row's uid: feedback given before it by the uid of a record stored earlier keeps its place;
        feedback by the uid of a stroke replayed here goes to its drawing's row, even after a later stroke
        (the label is the drawing's, as when it is given by the row's id). Feedback by the uid of a record
        not stored yet (it waits in another process's spool) waits in `pending_feedback` for it."""
        drawing_of = {  # uid -> the row it lands on: (drawing, model) for predictions, drawing for numbers
            "prediction": {op["record"].uid: (op["record"].drawing_id, op["record"].model_name)
                           for op in ops if op["op"] == "add" and op["record"].drawing_id},
            "number": {op["record"].uid: op["record"].drawing_id
                       for op in ops if op["op"] == "number" and op["record"].drawing_id},
        }  # fmt: skip
        for table_ops in (
            [op for op in ops if op["op"] not in NUMBER_OPS],
            [op for op in ops if op["op"] in NUMBER_OPS],
        ):
            for (kind, key), run in groupby(_few_runs(table_ops), key=_run_kind):
                run = list(run)
                target = "number" if kind in NUMBER_OPS else "prediction"
                if kind in ("add", "number"):
                    records = [op["record"] for op in run]
                    (self.repo.insert_missing if kind == "add" else numbers.insert_missing)(conn, records)
                    strokes = [(r.uid, r.drawing_id, r.model_name if kind == "add" else None)
                               for r in records if r.drawing_id]  # fmt: skip
                    if strokes:  # a label by one of these uids finds the drawing after a later stroke
                        pending.remember_strokes(conn, target, strokes)
                    waiting = pending.take(conn, target, [r.uid for r in records])
                    self._label(conn, target, waiting, drawing_of[target])
                elif key == "id" and kind == "feedback":
                    self.repo.apply_feedback(conn, "id", {op["id"]: (op["digit"], _given_at(op)) for op in run})
                elif key == "id":
                    numbers.apply_true_text(conn, "id", {op["id"]: (op["true_text"], _given_at(op)) for op in run})
                else:
                    field = "digit" if kind == "feedback" else "true_text"
                    labels = {op["uid"]: (op[field], _given_at(op)) for op in run}
                    self._label(conn, target, labels, drawing_of[target], keep=True)

    def _label(self, conn, target: str, labels: dict[str, Any], drawing_of: dict[str, Any], *, keep: bool = False) -> None:
        """Labels keyed by uid: a uid replayed in this batch labels its drawing's row (whichever stroke it
        holds now); the others label their own row or, with `keep`, wait in `pending_feedback` when their
        record is not stored yet."""
        if not labels:
            return
        unknown = [u for u in labels if u not in drawing_of]
        if unknown:  # strokes replayed earlier (maybe by another process) whose drawing has moved on since
            drawing_of = {**pending.stroke_drawings(conn, target, unknown), **drawing_of}
        by_drawing = pending.latest_per_key((drawing_of[u], v) for u, v in labels.items() if u in drawing_of)
        rest = {u: v for u, v in labels.items() if u not in drawing_of}
        if keep:
            rest = pending.keep_unmatched(conn, target, rest, self.max_waiting_labels)
        if target == "prediction":
            if by_drawing:
                self.repo.apply_feedback_by_drawing(conn, by_drawing)
            if rest:
                self.repo.apply_feedback(conn, "uid", rest)
        else:
            if by_drawing:
                numbers.apply_true_text(conn, "drawing_id", by_drawing)
            if rest:
                numbers.apply_true_text(conn, "uid", rest)

    def _sweep_quietly(self) -> None:
        """At every orphan scan in database mode: labels whose record arrived after the last sweep (a label
        queued by one process just as another finished replaying its record). Never changes the mode."""
        if self._spool_mode or not self._migrated:
            return
        try:
            self._sweep_pending()
        except SQLAlchemyError as exc:  # an outage is noticed by writes and health probes, not here
            log.debug("waiting labels not swept: %s", _one_line(exc))

    def _sweep_pending(self) -> None:
        """Apply waiting labels whose records arrived meanwhile (two processes replaying at once)."""
        with self.engine.begin() as conn:
            for target, labels in pending.take_resolvable(conn).items():
                self._label(conn, target, labels, {})


NUMBER_OPS = ("number", "number_feedback")


def _run_kind(op: dict[str, Any]) -> tuple[str, str]:
    """(operation, key kind): consecutive spool lines with the same one are applied together."""
    return op["op"], "uid" if "uid" in op else "id"


def _few_runs(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table's spooled operations reordered into few runs (each run is a handful of statements): between
    two labels by the uid of a record stored before them, the records first, in order, then the labels,
    by kind. Under load the spool alternates a prediction and its label, and a batch of 200 lines in ~100
    runs of one took ~500 round trips: the spool drained slower than requests filled it (session 15's
    probe: 6,000 waiting 80 s after the database came back). Labels stay right: the last one given wins
    whatever the order (`labelled_at`), a label by a uid recorded in this batch finds its drawing's row
    (`drawing_of`), a label by id names its row; a label by the uid of an older record keeps its place,
    since a later stroke of its drawing takes that row's uid. A spool with labels written before they carried
    their time (`at`) is replayed in its own order: there the order is what decides."""
    if any(_run_kind(op)[0] not in ("add", "number") and "at" not in op for op in ops):
        return ops
    out: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    recorded: set[str] = set()

    def flush() -> None:
        out.extend(records)
        out.extend(sorted(labels, key=_run_kind))  # stable: each kind's labels keep their order
        records.clear()
        labels.clear()

    for op in ops:
        kind, key = _run_kind(op)
        if kind in ("add", "number"):
            records.append(op)
            recorded.add(op["record"].uid)
        elif key == "id" or op["uid"] in recorded:
            labels.append(op)
        else:
            flush()
            out.append(op)
    flush()
    return out


def _stamp() -> str:
    """When a label is given (naive UTC, ISO): replays apply it only over an earlier one."""
    return utc_now().isoformat()


def _given_at(op: dict[str, Any]) -> datetime:
    """A spooled label's time; a line written before labels carried one counts as given now (as before)."""
    at = op.get("at")
    return datetime.fromisoformat(at) if at else utc_now()


def _parse(line: bytes) -> dict[str, Any]:
    op = json.loads(line)
    if op["op"] == "add":
        op["record"] = PredictionRecord.from_json(op["record"])
    elif op["op"] == "feedback":
        op["digit"] = check_label(op["digit"])
        if "uid" not in op:
            op["id"] = int(op["id"])
    elif op["op"] == "number":
        op["record"] = NumberRecord.from_json(op["record"])
    elif op["op"] == "number_feedback":
        op["true_text"] = str(op["true_text"])
        if "uid" not in op:
            op["id"] = int(op["id"])
    else:
        raise ValueError(f"unknown operation {op['op']!r}")
    return op


def _one_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text_[0] if text_ else ''}"[:300]
