"""Durable outage spool: an append-only JSON-lines file, fsynced on every append.

One directory belongs to one live process, proven by an exclusive `flock` on `spool.lock` (released by
the kernel when the process dies, however it dies). That gives two guarantees:
- two API replicas never write the same file: a locked directory is refused;
- a directory whose lock is free but whose `spool.jsonl` is not empty was left by a process that ended
  during an outage: any other store using a sibling directory adopts it and replays it (`orphans()`),
  if it writes to the same database (`spool.database` names it: a SQLite API started on a PostgreSQL
  API's data folder replayed its outage's predictions into the SQLite file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError

log = logging.getLogger("digitlab.store")

SPOOL_FILE = "spool.jsonl"
LOCK_FILE = "spool.lock"
COUNT_FILE = "spool.count"  # the owner's count of lines waiting, for its siblings' /health (`waiting_beside`)
REJECTED_FILE = "rejected.jsonl"  # lines the database refused for a reason other than an outage
DATABASE_FILE = "spool.database"  # the database the lines are for (its URL without password)


class SpoolBusyError(DigitlabError):
    code = "spool_in_use"


#: the uids of the records appended last that a spool remembers (`holds`): ~1 MB for 8,192
REMEMBERED_UIDS = 8192


def is_label_by_uid(line: bytes) -> bool:
    """A spool line (as `append` writes it) holding feedback by a record's uid, not by its id."""
    return line.startswith((b'{"op":"feedback","uid":', b'{"op":"number_feedback","uid":'))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Not a queue in memory: everything is on disk before `append` returns."""

    def __init__(self, directory: Path, database: str = ""):
        self.dir = Path(directory)
        self.database = database  # whose lines these are; "" (tests): any database's
        self.path = self.dir / SPOOL_FILE
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._fh = None
        self._count_fd: int | None = None
        self.offset = 0  # bytes of the file already written to the database
        self.pending = 0  # lines after `offset`
        self.labels_by_uid = 0  # labels by uid in the file (`store.max_waiting_labels`); 0 again once it is drained
        self._uids: dict[str, None] = {}  # the records appended last (`holds`), oldest first
        self.generation = 0  # a new file after the old one was removed: offsets read before mean nothing
        self._told: set[Path] = set()  # other databases' spools already logged (`_say_foreign`)

    # --- ownership -----------------------------------------------------------------------------------
    def open(self) -> Spool:
        """Lock the directory (SpoolBusyError if another live process has it) and count what is pending."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._try_lock():
            raise SpoolBusyError(
                f"spool directory {self.dir} is used by another running process; give each API process "
                "its own DIGITLAB_SPOOL_DIR (or leave it unset: the default is per host and process)"
            )
        self._repair_tail()
        if self.database and (not self.path.exists() or not self.path.stat().st_size):
            self._write_database()
        self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for appends; unbuffered:
        _fsync_dir(self.dir)  # a failed write leaves no bytes behind in a buffer to be flushed later
        self.offset = 0
        self.pending = self.labels_by_uid = 0
        for line, _ in self._lines(0):
            self.pending += 1
            self.labels_by_uid += is_label_by_uid(line)
        self._open_count()
        return self

    def _write_database(self) -> None:
        if not self.database:
            return
        tmp = self.dir / (DATABASE_FILE + ".tmp")
        tmp.write_text(self.database + "\n")
        os.replace(tmp, self.dir / DATABASE_FILE)

    def ours(self, path: Path) -> bool:
        """Are the lines of the spool at `path` for this spool's database? (One written before spools named
        their database: yes, as before.)"""
        try:
            theirs = (path / DATABASE_FILE).read_text().strip()
        except OSError:
            return True
        return not self.database or not theirs or theirs == self.database

    def _open_count(self) -> None:
        if self._count_fd is not None:
            os.close(self._count_fd)
        self._count_fd = os.open(self.dir / COUNT_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        self._publish()

    def _publish(self) -> None:
        """Write `pending` where sibling processes read it (one fixed-size write; best effort: a count,
        not data)."""
        if self._count_fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._count_fd, b"%20d\n" % self.pending, 0)

    def _try_lock(self) -> bool:
        lock_path = self.dir / LOCK_FILE
        for _ in range(3):
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # an adopter may have deleted the file between our open() and flock()
                if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                    self._lock_fd = fd
                    return True
            except FileNotFoundError:
                self.dir.mkdir(parents=True, exist_ok=True)
            os.close(fd)
        return False

    def _repair_tail(self) -> None:
        """A crash mid-append leaves a line without its newline: cut it, or the next append would be
        glued to it. (That record was never acknowledged, so nothing acknowledged is lost.)"""
        if not self.path.exists():
            return
        with open(self.path, "r+b") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())

    def close(self, *, remove_if_empty: bool = True) -> None:
        """Release the directory; an empty spool is removed so per-process directories do not pile up."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if self._count_fd is not None:
                os.close(self._count_fd)
                self._count_fd = None
            if self._lock_fd is None:
                return
            if remove_if_empty and self.pending == 0:
                self.path.unlink(missing_ok=True)
                (self.dir / COUNT_FILE).unlink(missing_ok=True)
                if not (self.dir / REJECTED_FILE).exists():
                    (self.dir / DATABASE_FILE).unlink(missing_ok=True)
                    (self.dir / LOCK_FILE).unlink(missing_ok=True)
                    try:
                        self.dir.rmdir()
                    except OSError:
                        pass  # something else lives there: leave it
            os.close(self._lock_fd)
            self._lock_fd = None

    def orphans(self) -> list[Spool]:
        """Sibling spools left non-empty by processes that are gone, opened (locked) for draining. Empty
        ones left by processes killed outright (no `close`) are removed on the way, so that per-process
        directories do not pile up across restarts."""
        found = []
        try:
            siblings = sorted(p for p in self.dir.parent.iterdir() if p.is_dir() and p != self.dir)
        except OSError:
            return found
        for path in siblings:
            if not (path / LOCK_FILE).exists():
                continue
            if not self.ours(path):
                self._say_foreign(path)
                continue
            orphan = Spool(path, self.database)
            try:
                orphan.open()  # SpoolBusyError: a live process's
            except (SpoolBusyError, OSError):
                continue
            if orphan.pending:
                found.append(orphan)
            else:
                orphan.close()  # empty: removed (a rejected-lines file keeps the folder)
        return found

    def _say_foreign(self, path: Path) -> None:
        try:
            waiting = (path / SPOOL_FILE).stat().st_size > 0
            theirs = (path / DATABASE_FILE).read_text().strip()
        except OSError:
            return
        if waiting and path not in self._told:
            self._told.add(path)
            log.warning("the spool %s holds predictions for another database (%s): left for an API of that "
                        "database to replay (this one writes to %s)", path, theirs, self.database)  # fmt: skip

    def siblings_pending(self) -> bool:
        """Does another spool beside this one (a live process's or an orphan) of its database hold lines not
        yet replayed?"""
        try:
            siblings = [p for p in self.dir.parent.iterdir() if p.is_dir() and p != self.dir and self.ours(p)]
        except OSError:
            return False
        for path in siblings:
            try:
                if (path / SPOOL_FILE).stat().st_size > 0:
                    return True
            except OSError:
                continue
        return False

    def waiting_beside(self, exclude: set[Path] | frozenset = frozenset()) -> int:
        """Lines waiting in the sibling spools (other workers' and replicas' of this folder, and those left
        by processes that are gone), from their owners' counts; `exclude`: spools this process counts
        itself (the ones it adopted). So that every worker's /health gives the same total."""
        total = 0
        try:
            siblings = [p for p in self.dir.parent.iterdir()
                        if p.is_dir() and p != self.dir and p not in exclude and self.ours(p)]  # fmt: skip
        except OSError:
            return 0
        for path in siblings:
            try:
                if (path / SPOOL_FILE).stat().st_size == 0:
                    continue
                total += int((path / COUNT_FILE).read_bytes() or b"0")
            except FileNotFoundError as exc:  # no spool file: nothing waits (a folder kept for its rejected
                if exc.filename and Path(exc.filename).name == COUNT_FILE:  # lines said "spool: 1" for good)
                    total += 1  # lines wait there (a spool of a version without counts): at least one
            except (OSError, ValueError):
                total += 1
        return total

    # --- data ----------------------------------------------------------------------------------------
    def append(self, op: dict[str, Any]) -> None:
        """Write one line and fsync it; raises OSError (nothing of the line left in the file) when the disk
        cannot take it, so the caller answers "not stored" instead of "stored"."""
        line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fh is None:
                raise RuntimeError("spool is not open")
            self._reopen_if_removed()
            fd = self._fh.fileno()
            start = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # a full disk (or a file size limit) took part of the line: cut it off, or the spool would
                # end in a torn line that no drain can get past, and the store would never leave spool mode
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            self.pending += 1
            record = op.get("record")
            if isinstance(record, dict) and record.get("uid"):
                self._uids[record["uid"]] = None
                if len(self._uids) > REMEMBERED_UIDS:
                    del self._uids[next(iter(self._uids))]
            elif not self.holds(op.get("uid")):
                self.labels_by_uid += is_label_by_uid(line)
            self._publish()

    def holds(self, uid: str | None) -> bool:
        """Is `uid` one of the last `REMEMBERED_UIDS` records appended here, waiting to be replayed? (A label by
        it names a record that comes: it is not counted in `labels_by_uid`.)"""
        return uid is not None and uid in self._uids

    def _removed(self) -> bool:
        """Was the open spool file (or its folder) deleted under us (an operator, a tmp cleaner)?"""
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return True

    def _reopen_if_removed(self) -> None:
        """Appends to a deleted file would go where nobody can read them back. What it held is gone;
        start a new one where the drain looks."""
        if not self._removed():
            return
        log.error("the spool file %s was removed; the records it held are lost; starting a new one", self.path)
        self._fh.close()
        self._fh = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / LOCK_FILE).exists() and self._lock_fd is not None:  # the folder went too
            os.close(self._lock_fd)
            self._lock_fd = None
            if not self._try_lock():
                raise OSError(f"spool directory {self.dir} was taken by another process")
        self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115
        _fsync_dir(self.dir)
        self.offset = 0
        self.pending = self.labels_by_uid = 0
        self._uids.clear()
        self.generation += 1
        self._open_count()

    def _lines(self, offset: int) -> Iterator[tuple[bytes, int]]:
        """Complete lines after `offset`, each with the offset just past it."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    return  # being written right now
                offset += len(line)
                yield line, offset

    def read(self, max_lines: int) -> tuple[list[bytes], tuple[int, int]]:
        """Up to `max_lines` pending lines (oldest first) and where they end (for `commit`)."""
        generation = self.generation
        lines, end = [], self.offset
        for line, end in self._lines(self.offset):
            lines.append(line)
            if len(lines) >= max_lines:
                break
        return lines, (generation, end)

    def commit(self, end: tuple[int, int], count: int) -> None:
        """The lines `read` returned (ending at `end`) are in the database."""
        with self._lock:
            generation, offset = end
            if generation != self.generation:  # read from a file that was removed since
                return
            self.offset = offset
            self.pending = max(0, self.pending - count)
            self._publish()

    def reset_if_drained(self) -> bool:
        """Truncate the file if everything in it is in the database. Appends go through the same lock,
        so a record appended meanwhile is never cut away."""
        with self._lock:
            if self._fh is None:
                return False
            if self._removed():  # nothing left to replay from a file deleted under us: a new one, empty
                self._reopen_if_removed()
                return True
            if os.fstat(self._fh.fileno()).st_size != self.offset:
                return False
            self._fh.truncate(0)
            os.fsync(self._fh.fileno())
            self.offset = 0
            self.pending = self.labels_by_uid = 0
            self._uids.clear()
            self._publish()
            return True

    def reject(self, line: bytes, reason: str) -> None:
        """Keep a line the database refuses (never drop data silently); the operator decides."""
        entry = {"reason": reason, "line": line.decode("utf-8", "replace").rstrip("\n")}
        with open(self.dir / REJECTED_FILE, "ab") as fh:
            fh.write((json.dumps(entry) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
