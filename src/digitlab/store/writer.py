"""Group commit: one writer thread per store inserts, in one transaction, every prediction that queued
while it was committing; a watchdog fails every caller the database has not answered in time (the batch
being committed and those queued behind it)."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any

from sqlalchemy.exc import IntegrityError

from digitlab.store.records import PredictionRecord
from digitlab.store.repository import Repository

#: the watchdog woke this much later than it asked: the process was paused (SIGSTOP, a frozen container, a
#: suspended machine), and the pause is not counted against the database. A worker stopped 15-18 s under load
#: resumed with its last writes "not answered in 5 s": spooled, "database unavailable" logged, /stats 503 for a
#: moment, with the database up (an API probe, session 50).
PAUSE_SECONDS = 1.0


class WriteSkipped(Exception):
    """The writer did not try: the store switched to spool mode while the records were queued."""


class WriteTimedOut(WriteSkipped):
    """The database did not answer the batch within the write deadline (a frozen server, a paused
    container): its records go to the spool; if the insert lands after all, the replay skips them (uid)."""


class GroupCommit:
    """Group commit: one writer thread inserts everything that queued up while it was committing.

    One request alone pays a thread hand-off; under load, many requests share one transaction, so one
    fsync and (SQLite with several worker processes) one hand-over of the write lock instead of one each.
    Callers block until their records are committed and get their ids, exactly as with direct inserts.
    """

    MAX_BATCH = 256

    def __init__(self, repo: Repository, skip=lambda: False, *, deadline: float | None = None, on_stall=None):
        self.repo = repo
        self.skip = skip  # true when the database is known to be away: fail queued writes at once
        self.deadline = deadline  # seconds a batch may take before its callers get WriteTimedOut
        self.on_stall = on_stall  # called (from the watchdog) when a batch missed the deadline
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._waiting: dict[Future, float] = {}  # every unanswered caller's future -> when it was submitted (`_clock`)
        self._paused = 0.0  # seconds the process was seen paused (PAUSE_SECONDS), left out of `_clock`
        self._stopped = threading.Event()

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="digitlab-store-writer", daemon=True)
        self._thread.start()
        if self.deadline:
            threading.Thread(target=self._watch, name="digitlab-store-watchdog", daemon=True).start()

    def _watch(self) -> None:
        """Fail the callers the database has not answered within the deadline: the writer thread stays
        blocked until the server answers (or its connection breaks), the requests do not. Those queued
        behind a stuck batch are failed too (they waited for the whole stall: 12-28 s in a probe)."""
        tick = min(0.25, self.deadline)
        last = time.monotonic()
        while not self._stopped.wait(tick):
            paused, last = time.monotonic() - last - tick, time.monotonic()
            if paused > PAUSE_SECONDS:  # this process did not run (SIGSTOP, a frozen container): not the database's
                self._paused += paused  # time, and its answer may be waiting to be read: the pause is not counted
                continue
            now = self._clock()
            late = [future for future, since in list(self._waiting.items()) if now - since >= self.deadline]
            for future in late:
                _settle_future(future, exc=WriteTimedOut())
            if late and self.on_stall is not None:
                self.on_stall()

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, waiting up to `timeout`; with a deadline, only while a caller still waits: a
        batch stuck on a frozen database whose callers were all answered (its records spooled) held every
        worker's shutdown 10 s, and new connections went unanswered meanwhile (an API probe, session 32)."""
        if self._thread is not None:
            self._queue.put(None)
            end = time.monotonic() + timeout
            while self._thread.is_alive() and time.monotonic() < end:
                self._thread.join(0.05)
                if self.deadline and not self._waiting:
                    break
            self._thread = None
        self._stopped.set()  # (the watchdog answered the callers of a stuck batch meanwhile)

    def insert(self, records: list[PredictionRecord]) -> list[int]:
        """The records' ids once committed; raises what the database raised."""
        return self.submit(records).result()

    def submit(self, records: list[PredictionRecord]) -> Future:
        """A Future of the records' ids, set by the writer thread after the commit."""
        future: Future = Future()
        if self._thread is None:  # not started (scripts, or after close): insert directly
            try:
                future.set_result(self._insert_or_existing(records))
            except Exception as exc:  # noqa: BLE001 - raised by the Future's result()
                future.set_exception(exc)
            return future
        if self.deadline:
            self._waiting[future] = self._clock()
            future.add_done_callback(self._answered)
        self._queue.put((records, future))
        return future

    def _clock(self) -> float:
        """Monotonic seconds, the pauses of the process left out (the write deadline's clock)."""
        return time.monotonic() - self._paused

    def _answered(self, future: Future) -> None:
        self._waiting.pop(future, None)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            while size < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True  # commit this batch, then stop
                    break
                batch.append(item)
                size += len(item[0])
            batch = [(records, future) for records, future in batch if not future.done()]
            if batch:  # (the watchdog failed the others: their callers spool the records)
                self._commit(batch)

    def _commit(self, batch: list[tuple[list[PredictionRecord], Future]]) -> None:
        if self.skip():  # an outage began while these waited: do not wait for another timeout
            for _, future in batch:
                _settle_future(future, exc=WriteSkipped())
            return
        try:
            ids = self.repo.insert_many([r for records, _ in batch for r in records])
        except IntegrityError:  # a uid already stored (a replayed record): sort it out per request
            for records, future in batch:
                try:
                    _settle_future(future, self._insert_or_existing(records))
                except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
                    _settle_future(future, exc=exc)
            return
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it (and spools its records)
            for _, future in batch:
                _settle_future(future, exc=exc)
            return
        start = 0
        for records, future in batch:  # (a future the watchdog failed already keeps its WriteTimedOut)
            _settle_future(future, ids[start : start + len(records)])
            start += len(records)

    def _insert_or_existing(self, records: list[PredictionRecord]) -> list[int]:
        try:
            return self.repo.insert_many(records)
        except IntegrityError:
            return [self.repo.insert(r) for r in records]  # an already stored uid returns its id


def _settle_future(future: Future, result: Any = None, *, exc: BaseException | None = None) -> None:
    """Set a future's outcome unless it has one (the watchdog and the writer may both try)."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
