"""The durable spool on its own, and the store's outage behaviour on both backends: start while the
database is away, replay in order and exactly once, adopt spools of dead processes, set refused lines
aside."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from digitlab.store import DatabaseUnavailableError, PredictionStore, SpoolBusyError
from digitlab.store.spool import REJECTED_FILE, SPOOL_FILE, Spool


# --- the spool file ------------------------------------------------------------------------------------
def test_append_read_commit_reset(tmp_path):
    spool = Spool(tmp_path / "s").open()
    for i in range(5):
        spool.append({"op": "x", "i": i})
    assert spool.pending == 5
    lines, end = spool.read(3)
    assert [json.loads(line)["i"] for line in lines] == [0, 1, 2]
    spool.commit(end, 3)
    assert spool.pending == 2 and not spool.reset_if_drained()
    lines, end = spool.read(10)
    spool.commit(end, len(lines))
    assert spool.reset_if_drained() and spool.pending == 0 and spool.path.stat().st_size == 0
    spool.append({"op": "x", "i": 5})  # appends continue after the truncation
    assert json.loads(spool.read(10)[0][0])["i"] == 5
    spool.close()
    assert (tmp_path / "s").exists()  # not empty: kept


def test_a_torn_last_line_is_cut_on_open(tmp_path):
    spool = Spool(tmp_path / "s").open()
    spool.append({"op": "x", "i": 1})
    spool.close()
    with open(tmp_path / "s" / SPOOL_FILE, "ab") as fh:
        fh.write(b'{"op":"x","i":2')  # the process died mid-write
    spool = Spool(tmp_path / "s").open()
    assert spool.pending == 1
    spool.append({"op": "x", "i": 3})
    assert [json.loads(line)["i"] for line in spool.read(10)[0]] == [1, 3]
    spool.close()


def test_a_write_the_disk_cannot_take_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk takes part of a line: the append raises (the caller answers "not stored") and the file
    ends where it did, so later lines are readable and the spool can still be drained and reset."""
    import errno
    import os

    spool = Spool(tmp_path / "s").open()
    spool.append({"op": "x", "i": 1})
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        spool.append({"op": "x", "i": 2, "pad": "y" * 100})
    monkeypatch.setattr(os, "write", real_write)
    assert spool.pending == 1 and spool.path.read_bytes().endswith(b"\n")
    spool.append({"op": "x", "i": 3})
    lines, end = spool.read(10)
    assert [json.loads(line)["i"] for line in lines] == [1, 3]
    spool.commit(end, len(lines))
    assert spool.reset_if_drained()
    spool.close()


def test_a_spool_file_removed_under_the_process_is_started_again(tmp_path):
    """Appends after the file (or its whole folder) was deleted land where the drain reads them."""
    import shutil

    spool = Spool(tmp_path / "s").open()
    spool.append({"op": "x", "i": 1})
    shutil.rmtree(tmp_path / "s")
    spool.append({"op": "x", "i": 2})
    assert spool.pending == 1 and (tmp_path / "s" / SPOOL_FILE).exists()
    lines, end = spool.read(10)
    assert [json.loads(line)["i"] for line in lines] == [2]
    (tmp_path / "s" / SPOOL_FILE).unlink()  # removed again, before the drain got to it
    spool.commit(end, len(lines))  # read from a file that is gone: moves nothing
    assert spool.reset_if_drained() and spool.pending == 0
    spool.append({"op": "x", "i": 3})
    assert [json.loads(line)["i"] for line in spool.read(10)[0]] == [3]
    spool.close()


def test_a_directory_has_one_owner_and_empty_ones_are_removed(tmp_path):
    owner = Spool(tmp_path / "s").open()
    with pytest.raises(SpoolBusyError):
        Spool(tmp_path / "s").open()
    assert owner.orphans() == []
    owner.close()
    assert not (tmp_path / "s").exists()  # empty: removed, per-process directories do not pile up


def test_orphans_are_spools_of_processes_that_are_gone(tmp_path):
    dead = Spool(tmp_path / "host-1").open()
    dead.append({"op": "x"})
    dead.close()  # lock released, data kept: what a crashed process leaves
    alive = Spool(tmp_path / "host-2").open()
    alive.append({"op": "y"})
    me = Spool(tmp_path / "host-3").open()
    orphans = me.orphans()
    assert [o.dir.name for o in orphans] == ["host-1"] and orphans[0].pending == 1
    for s in (*orphans, alive, me):
        s.close()


def test_a_spool_is_adopted_only_by_a_store_of_its_database(tmp_path, caplog):
    """A PostgreSQL API killed during an outage left its spool; a SQLite API started on the same data folder
    replayed it into the SQLite file, and PostgreSQL never got those predictions (a probe, session 28)."""
    dead = Spool(tmp_path / "host-1", "postgresql+psycopg://postgres@db:5432/digitlab").open()
    dead.append({"op": "x"})
    dead.close()
    me = Spool(tmp_path / "host-2", "sqlite:/data/digitlab.db").open()
    with caplog.at_level("WARNING", logger="digitlab.store"):
        assert me.orphans() == [] and not me.siblings_pending() and me.waiting_beside() == 0
    assert "holds predictions for another database (postgresql+psycopg://postgres@db:5432/digitlab)" in caplog.text
    same = Spool(tmp_path / "host-3", "postgresql+psycopg://postgres@db:5432/digitlab").open()
    (orphan,) = same.orphans()  # an API of that database replays it
    assert orphan.dir.name == "host-1" and orphan.pending == 1
    for s in (orphan, me, same):
        s.close()
    assert not (tmp_path / "host-2").exists()  # empty ones still leave nothing behind


def test_empty_spools_of_killed_processes_are_removed(tmp_path):
    killed = Spool(tmp_path / "host-1").open()
    killed._fh.close()  # what the kernel does for a process killed outright: its files closed, no `close()`
    os.close(killed._count_fd)
    os.close(killed._lock_fd)
    alive = Spool(tmp_path / "host-2").open()  # empty too, but its process runs: kept
    me = Spool(tmp_path / "host-3").open()
    assert me.orphans() == []
    assert not (tmp_path / "host-1").exists() and (tmp_path / "host-2" / SPOOL_FILE).exists()
    for s in (alive, me):
        s.close()


# --- the store during an outage ---------------------------------------------------------------------------
def test_start_while_the_database_is_away_then_recover(absent_db, tmp_path, make_record, open_store):
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")  # must not raise
    try:
        assert store.health() == {"database": "unavailable", "spool": 0}
        records = [make_record(i % 10) for i in range(12)]
        results = [store.add(r) for r in records]
        assert {r.stored for r in results} == {"spool"} and all(r.id is None for r in results)
        assert store.set_feedback_by_uid(records[3].uid, 3) is True  # spooled as well
        assert store.health() == {"database": "unavailable", "spool": 13}
        with pytest.raises(DatabaseUnavailableError):
            store.list()

        bring_back()
        assert store.wait_drained(timeout=30)
        assert store.health() == {"database": "ok", "spool": 0}
        rows, total = store.list(page_size=100)
        assert total == 12
        by_id = sorted(rows, key=lambda r: r.id)
        assert [r.uid for r in by_id] == [r.uid for r in records]  # in order, exactly once
        assert (by_id[3].drawn_digit, by_id[3].correct) == (3, True)  # feedback applied after its insert
        assert store.add(make_record()).stored == "database"
    finally:
        store.close()
    assert not (tmp_path / "spool" / "me").exists()


def test_the_spool_folder_removed_during_an_outage_loses_only_what_it_held(
    absent_db, tmp_path, make_record, open_store
):
    """Records spooled after the folder was deleted are stored when the database is back, and the store
    returns to database mode (it stayed in spool mode for good, answering "logged" for records it lost)."""
    import shutil

    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        lost = [store.add(make_record(1)) for _ in range(3)]
        assert {r.stored for r in lost} == {"spool"}
        shutil.rmtree(tmp_path / "spool" / "me")
        kept = [make_record(2) for _ in range(4)]
        assert {store.add(r).stored for r in kept} == {"spool"}
        bring_back()
        assert store.wait_drained(timeout=30)
        assert store.health() == {"database": "ok", "spool": 0}
        assert [r.uid for r in store.list(page_size=50)[0]][::-1] == [r.uid for r in kept]
        assert store.add(make_record(3)).stored == "database"
    finally:
        store.close()


def test_replay_is_idempotent_after_a_crash_between_write_and_truncate(
    db_url, tmp_path, make_record, open_store
):
    """Records already in the database and still in the spool are not written twice."""
    records = [make_record(i) for i in range(6)]
    with PredictionStore(db_url, tmp_path / "a") as store:
        for r in records[:4]:
            store.add(r)
    spool = Spool(tmp_path / "spool" / "me").open()
    for r in records:  # the first four were written to the database, then the process died
        spool.append({"op": "add", "record": r.to_json()})
    spool.append({"op": "feedback", "uid": records[5].uid, "digit": 5})
    spool.append({"op": "feedback", "id": 1, "digit": 7})
    spool.append({"op": "feedback", "uid": records[0].uid, "digit": 8})
    spool.append({"op": "feedback", "id": 1, "digit": 0})  # the last word counts
    spool.close()

    store = open_store(db_url, tmp_path / "spool" / "me")
    try:
        assert store.wait_drained(timeout=30)
        rows, total = store.list(page_size=50)
        assert total == 6
        by_id = sorted(rows, key=lambda r: r.id)
        assert [r.uid for r in by_id] == [r.uid for r in records]
        assert by_id[5].correct is True and by_id[0].drawn_digit == 0
    finally:
        store.close()


def test_a_dead_process_spool_is_adopted(db_url, tmp_path, make_record, open_store):
    records = [make_record(i) for i in range(3)]
    dead = Spool(tmp_path / "spool" / "host-111").open()
    for r in records:
        dead.append({"op": "add", "record": r.to_json()})
    dead.close()

    store = open_store(db_url, tmp_path / "spool" / "host-222")
    try:
        assert store.wait_drained(timeout=30)
        assert store.count() == 3
        assert not (tmp_path / "spool" / "host-111").exists()
    finally:
        store.close()


def test_lines_the_database_refuses_are_set_aside(db_url, tmp_path, make_record, open_store):
    good = make_record(1)
    spool = Spool(tmp_path / "spool" / "me").open()
    spool.append({"op": "add", "record": {"model_name": "broken"}})
    spool.append({"op": "add", "record": good.to_json()})
    spool.close()
    with open(tmp_path / "spool" / "me" / SPOOL_FILE, "ab") as fh:
        fh.write(b"not json\n")

    store = open_store(db_url, tmp_path / "spool" / "me")
    try:
        assert store.wait_drained(timeout=30)
        assert [r.uid for r in store.list()[0]] == [good.uid]
        rejected = (tmp_path / "spool" / "me" / REJECTED_FILE).read_text().splitlines()
        assert len(rejected) == 2
    finally:
        store.close()
    assert (tmp_path / "spool" / "me" / REJECTED_FILE).exists()  # kept for the operator


def test_every_worker_counts_the_lines_waiting_in_its_siblings_spools(tmp_path):
    """/health's spool count was each worker's own (913, 1360, 913... by which worker answered): every
    spool now publishes its count, and each worker adds up its siblings' (not the ones it adopted twice)."""
    a = Spool(tmp_path / "host-a").open()
    b = Spool(tmp_path / "host-b").open()
    for i in range(3):
        a.append({"op": "x", "i": i})
    for i in range(2):
        b.append({"op": "x", "i": i})
    assert a.waiting_beside() == 2 and b.waiting_beside() == 3
    lines, end = b.read(1)
    b.commit(end, 1)
    assert a.waiting_beside() == 1
    assert a.waiting_beside(exclude={b.dir}) == 0
    b.close()  # its process ends with a line still waiting: an orphan, counted until someone replays it
    assert a.waiting_beside() == 1
    orphan = a.orphans()[0]  # adopted: the whole file is replayed again (idempotent), and counted so
    assert orphan.pending == 2 and a.waiting_beside() == 2 and a.waiting_beside(exclude={orphan.dir}) == 0
    lines, end = orphan.read(10)
    orphan.commit(end, len(lines))
    assert orphan.reset_if_drained() and a.waiting_beside() == 0
    orphan.close()
    assert not (tmp_path / "host-b").exists()
    a.close(remove_if_empty=False)


def test_health_counts_the_records_waiting_in_the_other_workers_spools(db_url, tmp_path, make_record, open_store):
    """And says `catching_up` while they wait: it said "ok" with `spool: 637` for ~5 s after an outage, until the
    sibling's own probe saw the database back (a probe, session 46), and a load balancer reads only the status."""
    other = Spool(tmp_path / "spool" / "worker-2").open()  # a live worker still in spool mode
    for r in [make_record(i) for i in range(4)]:
        other.append({"op": "add", "record": r.to_json()})
    store = open_store(db_url, tmp_path / "spool" / "worker-1")
    try:
        assert store.health() == {"database": "catching_up", "spool": 4}
        assert store.pending() == 0  # its own (what /metrics adds up over the workers)
    finally:
        store.close()
        other.close(remove_if_empty=False)


def test_a_spool_of_records_and_their_labels_replays_in_few_statements(db_url, tmp_path, make_record, open_store):
    """Under load the spool alternates a prediction and its label. Replayed run by run that was ~5 statements
    per line (the probe: 6,000 lines still waiting 80 s after the database came back); now a batch's records
    go first, then its labels. Every label lands, the last one given wins, and a label by the uid of a record
    stored before the outage keeps its place before a later stroke of that drawing takes the row's uid."""
    from sqlalchemy import event

    from digitlab.store.store import _stamp

    live = open_store(db_url, tmp_path / "spool" / "live")  # stored before the outage
    first = make_record(1)
    first.drawing_id = "d-old"
    assert live.add(first).stored == "database"
    live.close()
    records = [make_record(i % 10) for i in range(90)]
    later = make_record(7)
    later.drawing_id = "d-old"  # a later stroke of the stored drawing, labelled by its first stroke's uid before
    dead = Spool(tmp_path / "spool" / "host-111").open()
    for i, r in enumerate(records):
        dead.append({"op": "add", "record": r.to_json()})
        dead.append({"op": "feedback", "uid": r.uid, "digit": i % 10, "at": _stamp()})
        if i == 40:
            dead.append({"op": "feedback", "uid": first.uid, "digit": 4, "at": _stamp()})
            dead.append({"op": "add", "record": later.to_json()})
        if i % 30 == 0:  # the person changed their mind: the last label given wins
            dead.append({"op": "feedback", "uid": r.uid, "digit": (i + 5) % 10, "at": _stamp()})
    dead.close()

    store = open_store(db_url, tmp_path / "spool" / "host-222", batch_size=500)
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda *a, **k: statements.append(a[2]))
    try:
        assert store.wait_drained(timeout=30)
        rows, total = store.list(page_size=200)
        assert total == 91
        labels = {r.uid: r.drawn_digit for r in rows}
        expected = {r.uid: (i + 5) % 10 if i % 30 == 0 else i % 10 for i, r in enumerate(records)}
        assert {u: labels[u] for u in expected} == expected
        (old,) = [r for r in rows if r.drawing_id == "d-old"]
        assert (old.uid, old.drawn_digit, old.predicted_digit) == (later.uid, 4, 7)  # the label reached the drawing
        replay = [s for s in statements if not s.lstrip().upper().startswith("SELECT 1")]
        assert len(replay) < 40, len(replay)  # one batch of 186 lines: two segments, a few statements each
    finally:
        store.close()


def test_a_database_recreated_empty_is_migrated_again_and_gets_the_spool(
    backend, empty_url, open_store, make_record, tmp_path, request
):
    """The database was dropped and created again, empty (or restored without our tables): every spooled
    prediction was set aside in rejected.jsonl as "refused", /health said `spool: 0`, nothing replayed them."""
    from sqlalchemy import text

    store = open_store(empty_url, tmp_path / "spool" / "me")
    try:
        store.add(make_record(1))
        if backend == "sqlite":  # every table dropped, as in a database file created anew
            with store.engine.begin() as conn:
                query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                for name in list(conn.scalars(text(query))):
                    conn.exec_driver_sql(f'DROP TABLE "{name}"')
        else:
            request.getfixturevalue("pg_databases").scratch()  # the same database, emptied
        results = [store.add(make_record(d)) for d in (2, 3, 4)]
        assert all(r.stored == "spool" for r in results)
        assert store.wait_drained(timeout=60)
        with store.engine.connect() as conn:
            stored = sorted(conn.scalars(text("SELECT predicted_digit FROM user_predictions")))
        assert stored == [2, 3, 4]  # (the first went with the old tables)
        assert not list((tmp_path / "spool").rglob(REJECTED_FILE))
        assert store.health() == {"database": "ok", "spool": 0}
    finally:
        store.close()


def test_a_sqlite_file_removed_under_the_store_loses_nothing_answered_after(open_store, make_record, tmp_path):
    """`rm digitlab.db*` under a running API: the open connections kept writing to the removed file, and six
    predictions answered `logged: true` with ids were gone at the next start (a probe, session 27). A write after
    the removal goes to a new file at the path (migrated, the spool replayed into it)."""
    from sqlalchemy import text

    from digitlab.store.db import make_engine

    path = tmp_path / "db" / "p.db"
    path.parent.mkdir()
    store = open_store(f"sqlite:///{path}", tmp_path / "spool" / "me")
    try:
        store.add(make_record(1))
        for f in path.parent.iterdir():  # the database, its WAL and shared memory
            f.unlink()
        results = [store.add(make_record(d)) for d in (2, 3, 4)]
        assert store.wait_drained(timeout=60), [r.stored for r in results]
        fresh = make_engine(f"sqlite:///{path}")  # what the next start finds at the path
        try:
            with fresh.connect() as conn:
                stored = sorted(conn.scalars(text("SELECT predicted_digit FROM user_predictions")))
        finally:
            fresh.dispose()
        assert stored == [2, 3, 4]  # (the first went with the removed file)
        assert store.health() == {"database": "ok", "spool": 0}
    finally:
        store.close()


def test_a_sqlite_file_unwritable_when_the_store_starts_is_written_once_it_can_be(open_store, make_record, tmp_path):
    """A worker started while its SQLite file could not be written (immutable; for a user other than root, read-only)
    kept its read-only connections when the file could be written again: every prediction spooled, for good,
    until a restart (a probe, session 30). The connections are opened again: the spool is replayed."""
    import os
    import subprocess

    path = tmp_path / "db" / "p.db"
    path.parent.mkdir()
    open_store(f"sqlite:///{path}", tmp_path / "spool" / "first").close()  # (created and migrated)

    def writable(yes: bool) -> None:
        if os.geteuid() == 0:  # (root writes a read-only file: only the immutable flag stops it)
            subprocess.run(["chattr", "-i" if yes else "+i", str(path)], check=True)
        else:
            path.chmod(0o644 if yes else 0o444)

    writable(False)
    try:
        store = open_store(f"sqlite:///{path}", tmp_path / "spool" / "me")
        try:
            assert store.add(make_record(1)).stored == "spool"
            writable(True)
            assert store.wait_drained(timeout=30)
            assert store.add(make_record(2)).stored == "database"
            assert sorted(r.predicted_digit for r in store.list(1, 50)[0]) == [1, 2]
        finally:
            store.close()
    finally:
        writable(True)


def test_a_database_restored_from_before_a_migration_is_migrated_again_and_gets_the_spool(
    empty_url, open_store, make_record, tmp_path
):
    """A dump taken before migration 0010 restored under a running API: every prediction answered meanwhile
    was set aside in rejected.jsonl for good (a missing column was "the database refused it", not an
    outage), 805 in 20 s, and the reads were 500s. Now it is an outage: spooled, migrated, replayed."""
    from sqlalchemy import text

    from digitlab.store.db import downgrade, head_revision, upgrade

    store = open_store(empty_url, tmp_path / "spool" / "me")
    try:
        store.add(make_record(1))
        downgrade(store.engine, "0009")  # the database as it was before 0010 (a dump restored under the API)
        results = [store.add(make_record(d)) for d in (2, 3, 4)]
        assert all(r.stored == "spool" for r in results)
        assert store.wait_drained(timeout=60)
        with store.engine.connect() as conn:
            stored = sorted(conn.scalars(text("SELECT predicted_digit FROM user_predictions")))
            version = conn.scalar(text("SELECT version_num FROM alembic_version"))
        assert stored == [1, 2, 3, 4] and version == head_revision()
        assert not list((tmp_path / "spool").rglob(REJECTED_FILE))
        assert store.health() == {"database": "ok", "spool": 0}
        upgrade(store.engine)  # (nothing left to do)
    finally:
        store.close()


def test_records_spooled_while_the_drain_switched_back_are_drained_at_once(open_store, empty_url, make_record, tmp_path):
    """A write that failed just as the drain thread found the spool empty and switched back to the database
    was appended after that switch: the thread slept 30 s (its orphan scan) while the worker spooled every
    prediction with the database up (4,220 of them in a probe)."""
    from sqlalchemy.exc import OperationalError

    store = open_store(empty_url, tmp_path / "spool" / "me")
    try:
        store.add(make_record(1))
        assert store.wait_drained(timeout=10)
        time.sleep(0.5)  # the drain thread is asleep (its next scan is 30 s away)
        store._db_ok = False  # as after `_mark_down`, whose wake the drain thread had already used up
        store._spool_after_error({"op": "add", "record": make_record(2).to_json()},
                                 OperationalError("INSERT", {}, Exception("server closed the connection")))  # fmt: skip
        assert store.wait_drained(timeout=5)  # drained in a moment, not after 30 s
        assert store.health() == {"database": "ok", "spool": 0}
    finally:
        store.close()


def test_every_worker_says_the_sqlite_file_takes_no_writes_while_it_is_locked(open_store, tmp_path):
    """During another process's write lock only the worker whose write met it said "unavailable": /health
    alternated between "ok" and "unavailable" from one request to the next."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    writer, idle = open_store(url, tmp_path / "spool" / "w"), open_store(url, tmp_path / "spool" / "i")
    try:
        assert idle.health()["database"] == "ok"
        holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            idle._last_probe = writer._last_probe = 0.0  # (a probe at most once a second)
            assert idle.health()["database"] == "unavailable"  # it wrote nothing, and says so too
            assert writer.health()["database"] == "unavailable"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        idle._last_probe = 0.0
        assert idle.health()["database"] == "ok"
    finally:
        writer.close()
        idle.close()


def test_a_database_that_reads_but_takes_no_writes_is_logged_once(open_store, tmp_path, make_record, caplog,
                                                                  monkeypatch):  # fmt: skip
    """While another process held SQLite's write lock, the log said "database is available" (its read check
    passed) and "unavailable" (the replay failed) on every retry, for as long as the lock was held. Now it says
    once that the database takes no writes (reads go on, session 50), and once that the spool is drained."""
    import logging

    from sqlalchemy.exc import OperationalError

    store = open_store(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "spool" / "me")
    try:
        refusals = {"left": 6}
        drain = store._drain_own

        def locked() -> None:
            if refusals["left"]:
                refusals["left"] -= 1
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            drain()

        monkeypatch.setattr(store, "_drain_own", locked)
        with caplog.at_level(logging.INFO, logger="digitlab.store"):
            store._spool_after_error({"op": "add", "record": make_record(1).to_json()},
                                     OperationalError("INSERT", {}, Exception("database is locked")))  # fmt: skip
            assert store.wait_drained(timeout=10)
        said = [r.getMessage() for r in caplog.records if r.name == "digitlab.store"]
        assert refusals["left"] == 0
        assert sum("takes no writes" in m for m in said) == 1, said
        assert sum("spool drained" in m for m in said) == 1, said
        assert not any("unavailable" in m or m.endswith("is available") for m in said), said
        assert store.health()["database"] == "ok"
    finally:
        store.close()


@contextlib.contextmanager
def _write_lock_held(path):
    """Another process's connection holding the SQLite file's write lock meanwhile."""
    import sqlite3

    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_writes_go_to_the_spool_at_once_while_the_health_probe_finds_the_sqlite_file_locked(
    open_store, tmp_path, make_record
):
    """/health said "unavailable" (another process held SQLite's write lock) and the next prediction still waited
    out the 5 s write deadline, in each worker: after a start with the file locked every worker's first answers
    took 5 s (a probe, session 49). What the probe found sends writes to the spool at once."""
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "spool" / "me")
    try:
        id = store.add(make_record(1)).id
        with _write_lock_held(tmp_path / "w.db"):
            store._last_probe = 0.0
            assert store.health()["database"] == "unavailable"
            started = time.monotonic()
            added = store.add(make_record(2))
            assert store.set_feedback(id, 4) is True
            took = time.monotonic() - started
            assert added.stored == "spool" and took < 1.0, (added, took)
        assert store.wait_drained(timeout=15)
        assert store.count() == 2 and store.get(id).drawn_digit == 4
        store._last_probe = 0.0
        assert store.health()["database"] == "ok"
        assert store.add(make_record(3)).stored == "database"
    finally:
        store.close()


def test_reads_go_on_while_another_process_holds_the_sqlite_write_lock(open_store, tmp_path, make_record):
    """A write that met another process's write lock (its 5 s busy timeout, or the write deadline) marked the
    database down: History, stats and labels' lookups answered 503 "database unavailable" until the lock went
    (321 times in 12 s, 2 workers: an API probe, session 50), though SQLite's WAL lets them read. Writes wait in
    the spool; reads go on."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from digitlab.store.store import WriteStalled

    store = open_store(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "spool" / "me")
    try:
        first = store.add(make_record(1)).id
        with _write_lock_held(tmp_path / "w.db"):
            assert store.add(make_record(2)).stored == "spool"  # (after the busy timeout or the write deadline)
            for _ in range(3):  # the drain thread meets the lock too, meanwhile
                rows, total = store.list()
                assert total == 1 and rows[0].id == first
                assert sum(e["predictions"] for e in store.stats().values()) == 1
                assert store.get(first) is not None
                time.sleep(1.0)
            assert store.health()["database"] == "unavailable"  # writes do not reach the database
            # what the drain thread's replay meets after its busy timeout, and the write deadline's watchdog: the
            # store marked itself down (until its next retry, 0.5-30 s later), each read a 503 meanwhile
            locked = OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
            for exc in (locked, WriteStalled("the database did not answer a write in 5 s")):
                store._mark_down(exc, wake=False)
                assert store.list()[1] == 1 and store.get(first) is not None
        assert store.wait_drained(timeout=20)
        assert store.count() == 2
        store._last_probe = 0.0
        assert store.health()["database"] == "ok"
    finally:
        store.close()


def test_a_replay_stuck_on_the_database_holds_up_no_new_record(open_store, tmp_path, make_record, monkeypatch):
    """The replay's last lines were written while holding the lock every append takes: SQLite's write lock held
    by another process then kept each new record (and `_mark_down`) waiting out the busy timeout, on top of the
    write deadline: 10 s for one prediction (a probe, session 49: 2 workers, the file locked 15 s). The
    database is written to outside that lock now; new records go to the spool at once."""
    import sqlite3
    import threading

    path = tmp_path / "w.db"
    store = open_store(f"sqlite:///{path}", tmp_path / "spool" / "me")
    try:
        drain, calls, took, adding = store._drain_batch, [], [], []

        def drain_batch(spool):
            calls.append(1)
            if len(calls) == 2 and spool is store.spool:  # a record appended while the first batch was replayed
                spool.append({"op": "add", "record": make_record(2).to_json()})
                holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
                holder.execute("BEGIN IMMEDIATE")  # another process takes the write lock for 2 s
                threading.Timer(2.0, lambda: (holder.execute("ROLLBACK"), holder.close())).start()

                def add() -> None:
                    time.sleep(0.3)  # (the replay is waiting for the lock by then)
                    started = time.monotonic()
                    took.append((store.add(make_record(3)).stored, time.monotonic() - started))

                adding.append(threading.Thread(target=add))
                adding[0].start()
            return drain(spool)

        monkeypatch.setattr(store, "_drain_batch", drain_batch)
        store._spool_after_error({"op": "add", "record": make_record(1).to_json()},
                                 TimeoutError("the database did not answer a write in 5 s"))  # fmt: skip
        assert store.wait_drained(timeout=15)
        adding[0].join(10)
        assert len(took) == 1, took
        assert took[0][1] < 1.0, f"a new record waited {took[0][1]:.1f} s for the replay"
        assert store.wait_drained(timeout=15)
        assert store.count() == 3
    finally:
        store.close()


def test_health_says_failing_while_the_spool_cannot_take_the_records_of_an_outage(absent_db, open_store, make_record,
                                                                                 tmp_path):
    """During an outage with the spool's disk full the answers said `logged: false` while /health said only
    "unavailable", as for an outage that loses nothing (a probe, session 30)."""
    url, _bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        assert store.add(make_record(1)).stored == "spool"
        assert store.health()["database"] == "unavailable"
        store.note_write(False)  # (what the API notes for an answer it could not store)
        assert store.health()["database"] == "failing"
    finally:
        store.close()


def test_a_folder_left_with_only_rejected_lines_holds_nothing_waiting(tmp_path):
    """A dead worker's folder kept for its rejected.jsonl (no spool file left) was counted as one line waiting:
    /health said `spool: 1` for good, and "database ok, spool 0" never came (an API probe)."""
    a = Spool(tmp_path / "host-a").open()
    left = tmp_path / "host-b"
    left.mkdir()
    (left / REJECTED_FILE).write_text('{"reason": "refused", "line": "{}"}\n')
    (left / "spool.lock").touch()
    assert a.waiting_beside() == 0 and not a.siblings_pending()
    a.close(remove_if_empty=False)


_REFUSE = {  # a database that answers but will not take some rows (a trigger here; a constraint or a grant alike)
    "postgresql": [
        (
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF left(NEW.session_id, 4) = 'rej-' THEN "
            "RAISE EXCEPTION 'refused by policy'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        ),
        "CREATE TRIGGER refuse_p BEFORE INSERT ON user_predictions FOR EACH ROW EXECUTE FUNCTION refuse()",
        "CREATE TRIGGER refuse_n BEFORE INSERT ON read_numbers FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
    "sqlite": [
        f"CREATE TRIGGER refuse_{t[0]} BEFORE INSERT ON {t} WHEN substr(NEW.session_id, 1, 4) = 'rej-' "
        "BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
        for t in ("user_predictions", "read_numbers")
    ],
}


def test_a_record_the_database_refuses_is_answered_not_stored_and_health_says_failing(
    backend, empty_url, open_store, make_record, tmp_path
):
    """A record the database refuses for another reason than an outage was spooled and answered "stored"
    (`logged: true`), then set aside by the replay, while /health said `ok` and feedback by its uid found
    nothing (an API probe). Now it is answered `refused` at once and kept in rejected.jsonl, /health says
    `failing`; the records written with it in one batch are stored."""
    from tests.store.test_numbers import number

    store = open_store(empty_url, tmp_path / "spool" / "me")
    try:
        with store.engine.begin() as conn:
            for statement in _REFUSE[backend]:
                conn.exec_driver_sql(statement)
        good, bad = make_record(1, session_id="fine"), make_record(2, session_id="rej-1")
        results = store.add_many([good, bad])
        assert [(r.stored, r.id is None) for r in results] == [("database", False), ("refused", True)]
        assert store.health() == {"database": "failing", "spool": 0}
        assert [r.uid for r in store.list()[0]] == [good.uid]
        assert store.add_number(number("42", session_id="rej-2")).stored == "refused"
        assert store.add_number(number("43", session_id="fine")).stored == "database"
        kept = [json.loads(line) for line in (tmp_path / "spool" / "me" / REJECTED_FILE).read_text().splitlines()]
        assert [json.loads(k["line"])["record"]["session_id"] for k in kept] == ["rej-1", "rej-2"]
        assert all("refused by policy" in k["reason"] for k in kept)
        assert store.pending() == 0 and store.spool.pending == 0  # nothing queued that will never be stored
    finally:
        store.close()
