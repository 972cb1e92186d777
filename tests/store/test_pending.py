"""Feedback replayed before the record it names (each API process spools on its own during an outage, and
a person's label may reach another worker than their prediction): it waits for the record, never lost."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import func, select
from tests.store.test_numbers import number

from digitlab.store import DatabaseUnavailableError
from digitlab.store.models import PENDING
from digitlab.store.numbers import list_numbers
from digitlab.store.spool import DATABASE_FILE


def _waiting(store) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(PENDING)))


def test_labels_spooled_by_another_worker_reach_records_replayed_after_them(
    absent_db, tmp_path, make_record, open_store
):
    """Worker "a" spooled the labels, worker "b" the prediction and the number they name; "a"'s spool is
    replayed first (both left orphans, adopted in name order by the next process). Without waiting in
    `pending_feedback` the labels matched no row and were dropped."""
    url, bring_back = absent_db
    labels = open_store(url, tmp_path / "spool" / "a-labels")
    records = open_store(url, tmp_path / "spool" / "b-records")
    try:
        seven = records.add(make_record(7))
        other = records.add(make_record(1))
        read = records.add_number(number("2024"))
        assert labels.set_feedback_by_uid(seven.uid, 7)
        assert labels.set_number_feedback("2021", uid=read.uid).stored == "spool"
    finally:
        labels.close()  # both processes end during the outage: their spools stay on disk
        records.close()
    bring_back()
    later = open_store(url, tmp_path / "spool" / "c-later")
    try:
        assert later.wait_drained(timeout=60)
        rows = {r.uid: r for r in later.list(1, 50)[0]}
        assert (rows[seven.uid].drawn_digit, rows[seven.uid].correct) == (7, True)
        assert rows[other.uid].drawn_digit is None
        stored_numbers = list_numbers(later.engine)[0]
        assert [(n.true_text, n.correct) for n in stored_numbers] == [("2021", False)]
        assert _waiting(later) == 0
    finally:
        later.close()


def test_a_label_whose_record_never_comes_waits_and_changes_nothing(absent_db, tmp_path, make_record, open_store):
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        stored = store.add(make_record(3))
        assert store.set_feedback_by_uid("f" * 32, 3)  # a uid no process ever answered
        bring_back()
        assert store.wait_drained(timeout=60)
        assert store.get_by_uid(stored.uid).drawn_digit is None
        assert _waiting(store) == 1  # dropped after pending.MAX_AGE, never applied to another row
    finally:
        store.close()


def test_a_worker_back_before_another_queues_labels_for_its_spooled_records(
    db_url, tmp_path, make_record, open_store
):
    """In database mode, a label by the uid of a record that another process still holds in its spool is
    queued (not 404) and applied when that spool is replayed."""
    here = open_store(db_url, tmp_path / "spool" / "here")
    try:
        assert not here.set_feedback_by_uid("e" * 32, 4)  # nothing spooled anywhere: no such prediction
        elsewhere = tmp_path / "spool" / "elsewhere"
        other = open_store("sqlite:///" + str(tmp_path / "missing" / "x.db"), elsewhere)  # its database is away
        record = make_record(4)
        assert other.add(record).stored == "spool"
        other.close()  # it ends with the record still spooled: an orphan the next scan adopts
        # (a missing SQLite file stands in for the shared database being away: the spool names that database)
        (elsewhere / DATABASE_FILE).write_text(here.spool.database + "\n")
        assert here.set_feedback_by_uid(record.uid, 4)  # queued: the record may still come
        assert _waiting(here) == 1
        adopter = open_store(db_url, tmp_path / "spool" / "adopter")
        try:
            assert adopter.wait_drained(timeout=60)
        finally:
            adopter.close()
        row = here.get_by_uid(record.uid)
        assert (row.drawn_digit, row.correct) == (4, True)
        assert _waiting(here) == 0
    finally:
        here.close()
        shutil.rmtree(tmp_path / "spool", ignore_errors=True)


def test_a_label_left_waiting_after_its_record_arrived_is_applied_by_the_next_scan(
    db_url, tmp_path, make_record, open_store
):
    """The race: a label was queued just after the replay of its record committed (and after that replay's
    sweep). The periodic scan applies it."""
    import json
    from datetime import datetime

    from sqlalchemy import insert

    store = open_store(db_url, tmp_path / "spool" / "me", orphan_scan_interval=0.2)
    try:
        stored = store.add(make_record(5))
        with store.engine.begin() as conn:
            conn.execute(insert(PENDING).values(created_at=datetime.now(), target="prediction", uid=stored.uid,
                                                label=json.dumps(5)))  # fmt: skip
        deadline = time.monotonic() + 10
        while _waiting(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        row = store.get_by_uid(stored.uid)
        assert (row.drawn_digit, row.correct, _waiting(store)) == (5, True, 0)
    finally:
        store.close()


def test_the_label_given_last_wins_when_an_earlier_one_is_replayed_later(absent_db, tmp_path, make_record, open_store):
    """Two workers during an outage: "a" holds the prediction and the first answer (5), "b" the person's
    corrected answer (2). "b"'s spool is replayed first (its label waits for the record); "a"'s replay then
    brought its older 5 over the 2 (the probe: 20-25 % of twice-labelled predictions)."""
    url, bring_back = absent_db
    first = open_store(url, tmp_path / "spool" / "b-first")  # the prediction and the first answers
    second = open_store(url, tmp_path / "spool" / "a-second")  # the answers given last: adopted (by name) first
    try:
        record = make_record(7)
        assert first.add(record).stored == "spool"
        assert first.set_feedback_by_uid(record.uid, 5)
        time.sleep(0.01)
        assert second.set_feedback_by_uid(record.uid, 2)  # the answer given last
        number_record = number("2024")
        read = first.add_number(number_record)
        assert first.set_number_feedback("2021", uid=read.uid).stored == "spool"
        time.sleep(0.01)
        assert second.set_number_feedback("2024", uid=read.uid).stored == "spool"
    finally:
        first.close()
        second.close()
    bring_back()
    later = open_store(url, tmp_path / "spool" / "c-later")
    try:
        assert later.wait_drained(timeout=60)
        assert later.get_by_uid(record.uid).drawn_digit == 2
        assert [(n.true_text, n.correct) for n in list_numbers(later.engine)[0]] == [("2024", True)]
        assert _waiting(later) == 0
    finally:
        later.close()


def test_a_spooled_label_does_not_replace_one_given_directly_after_it(db_url, tmp_path, make_record, open_store):
    """The record is stored; worker "a" spools label 5 during its own outage, then worker "b" (database
    fine) stores label 2. "a"'s late replay put the 5 back."""
    b = open_store(db_url, tmp_path / "spool" / "b")
    try:
        stored = b.add(make_record(7))
        away = tmp_path / "spool" / "a"
        a = open_store("sqlite:///" + str(tmp_path / "missing" / "x.db"), away)  # "a" cannot reach its database
        assert a.set_feedback(stored.id, 5)  # spooled
        a.close()
        time.sleep(0.01)
        assert b.set_feedback(stored.id, 2)
        shutil.move(str(away), str(tmp_path / "spool" / "a-orphan"))
        later = open_store(db_url, tmp_path / "spool" / "c")  # adopts "a"'s spool and replays it here
        try:
            assert later.wait_drained(timeout=60)
            assert later.get(stored.id).drawn_digit == 2
        finally:
            later.close()
    finally:
        b.close()


def test_of_two_waiting_labels_for_one_record_the_one_given_last_is_taken(store):
    """Two workers park labels for the same record in either order: the later answer must be the one
    applied (taking the last parked one lost an answer given later but parked first)."""
    from datetime import datetime, timedelta

    from digitlab.store import pending

    earlier = datetime(2026, 11, 28, 12, 0, 0)
    later = earlier + timedelta(seconds=5)
    with store.engine.begin() as conn:
        pending.keep_unmatched(conn, "prediction", {"a" * 32: (2, later)})
        pending.keep_unmatched(conn, "prediction", {"a" * 32: (5, earlier)})
        assert pending.take(conn, "prediction", ["a" * 32]) == {"a" * 32: (2, later)}


def test_labels_for_records_not_stored_stop_at_the_cap_during_an_outage(absent_db, tmp_path, make_record, open_store):
    """A client sending labels by made-up uids during an outage: each was spooled and then waited a day in
    `pending_feedback`, with no limit. Past `max_waiting_labels` in a spool such a label is refused
    (`WaitingLabelsFull`); what was spooled before is kept and reaches the database; labels by id, and by the uid
    of a record this spool holds, still go (a probe: the made-up uids filled the cap and a person's label of
    their own drawing was refused)."""
    import pytest

    from digitlab.store.pending import WaitingLabelsFull

    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me", max_waiting_labels=2)
    try:
        stored = store.add(make_record(3))
        read = store.add_number(number("2024"))
        assert store.set_feedback_by_uid("f" * 32, 3)
        assert store.set_feedback_by_uid("c" * 32, 3)
        with pytest.raises(WaitingLabelsFull):
            store.set_feedback_by_uid("e" * 32, 4)
        with pytest.raises(WaitingLabelsFull):
            store.set_number_feedback("7", uid="d" * 32)
        assert store.set_feedback_by_uid(stored.uid, 3)  # its record is in this spool: it comes
        assert store.set_number_feedback("2024", uid=read.uid).stored == "spool"
        assert store.set_feedback(1, 3)  # by id (the same record, id 1 once replayed): never waits for a record
        lines = store.spool.pending
        bring_back()
        assert store.wait_drained(timeout=60)
        assert lines == 7  # the two records and the five labels taken
        assert store.get_by_uid(stored.uid).drawn_digit == 3
        assert [n.true_text for n in list_numbers(store.engine)[0]] == ["2024"]
        assert _waiting(store) == 2  # the made-up uids' labels
        assert store.spool.labels_by_uid == 0  # the spool drained: room again for the next outage
    finally:
        store.close()


def test_labels_parked_for_a_sibling_spool_stop_at_the_cap(db_url, tmp_path, make_record, open_store):
    """In database mode, while another process's spool holds lines, a label by an unknown uid is parked in
    `pending_feedback`: at most `max_waiting_labels` of them; the next is refused, the parked ones stay, and
    labels by the uid of a stored record are not held back."""
    import pytest

    from digitlab.store.pending import WaitingLabelsFull

    here = open_store(db_url, tmp_path / "spool" / "here", max_waiting_labels=2)
    try:
        stored = here.add(make_record(6))
        elsewhere = tmp_path / "spool" / "elsewhere"
        other = open_store("sqlite:///" + str(tmp_path / "missing" / "x.db"), elsewhere)  # its database is away
        assert other.add(make_record(4)).stored == "spool"
        other.close(timeout=1)
        (elsewhere / DATABASE_FILE).write_text(here.spool.database + "\n")
        assert here.set_feedback_by_uid("a" * 32, 1)
        assert here.set_number_feedback("12", uid="b" * 32).stored == "spool"
        with pytest.raises(WaitingLabelsFull):
            here.set_feedback_by_uid("c" * 32, 1)
        with pytest.raises(WaitingLabelsFull):
            here.set_number_feedback("12", uid="d" * 32)
        assert _waiting(here) == 2
        assert here.set_feedback_by_uid(stored.uid, 6)  # its record is stored: nothing waits
        assert here.get_by_uid(stored.uid).drawn_digit == 6
    finally:
        here.close()
        shutil.rmtree(tmp_path / "spool", ignore_errors=True)


def test_a_replay_parks_no_more_labels_than_the_cap(absent_db, tmp_path, make_record, open_store):
    """Two spools of an outage each hold labels by uids no record has: their replay parks at most
    `max_waiting_labels` in all (the rest is dropped and logged), the ones parked first staying."""
    url, bring_back = absent_db
    for name, uids in (("a-first", "12"), ("b-second", "345")):
        spool_store = open_store(url, tmp_path / "spool" / name, max_waiting_labels=3)
        try:
            for u in uids:
                assert spool_store.set_feedback_by_uid(u * 32, 1)
        finally:
            spool_store.close()
    bring_back()
    later = open_store(url, tmp_path / "spool" / "c-later", max_waiting_labels=3)
    try:
        assert later.wait_drained(timeout=60)
        with later.engine.connect() as conn:
            assert sorted(conn.scalars(select(PENDING.c.uid))) == ["1" * 32, "2" * 32, "3" * 32]
    finally:
        later.close()


def test_two_replays_at_once_park_no_more_than_the_cap(store, backend):
    """Two workers replaying at once each counted the other's parked labels as absent (not committed yet):
    with a cap of 20 the probe's two workers parked 40. The second waits for the first and parks what is left."""
    import threading
    from datetime import datetime

    from digitlab.store import pending

    at = datetime(2026, 12, 6, 1, 0, 0)
    first = store.engine.connect()
    tx = first.begin()
    pending.keep_unmatched(first, "prediction", {u * 32: (1, at) for u in "12"}, 3)
    done = threading.Event()

    def second() -> None:
        with store.engine.begin() as conn:
            pending.keep_unmatched(conn, "prediction", {u * 32: (1, at) for u in "345"}, 3)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    tx.commit()
    first.close()
    thread.join(timeout=30)
    assert done.is_set() and _waiting(store) == 3


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has no lock timeout: a write waits
def test_a_replay_that_waits_for_the_labels_lock_is_no_outage(backend, db_url, tmp_path, make_record, open_store):
    """After an outage two workers replay their spools; a replay holding labels by uid takes the labels' lock
    (`pending.lock_waiting`) and one that waited 3 s for it (PostgreSQL's `lock_timeout`) took that for an
    outage: the store said "unavailable", answered /stats 503 with the database up, and backed off (an API
    probe, session 50). Here another transaction holds the lock 4.5 s: reads go on, and the label is replayed
    once the lock is free."""
    import threading

    from digitlab.store.db import make_engine
    from digitlab.store.pending import _LOCK_KEY

    store = open_store(db_url, tmp_path / "spool" / "me")
    try:
        record = make_record(3)
        assert store.add(record).stored == "database"
        holder = make_engine(db_url)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.begin() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
                held.set()
                release.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(5)
        store._mark_down(ConnectionError("a test outage"), wake=False)
        assert store.set_feedback_by_uid(record.uid, 8)  # spooled
        store._wake.set()  # the replay: it meets the lock
        failures = []
        end = time.monotonic() + 4.5
        while time.monotonic() < end:
            time.sleep(0.2)
            try:
                store.stats()
            except DatabaseUnavailableError as exc:
                failures.append(round(end - time.monotonic(), 1))
                assert "unavailable" in str(exc)
        release.set()
        thread.join(5)
        holder.dispose()
        assert not failures, f"reads refused with the database up, {len(failures)} times"
        assert store.wait_drained(10)
        assert store.get_by_uid(record.uid).drawn_digit == 8
    finally:
        store.close()
