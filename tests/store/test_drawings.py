"""One drawing, one record (per model): live predictions with a drawing id update the drawing's row; and
the "not a digit" label. On both backends, through PredictionStore, including a replay from the spool."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

from digitlab.store.records import NOT_A_DIGIT


def test_a_drawing_is_one_row_per_model_with_its_latest_prediction(store, make_record, make_png):
    first = store.add(make_record(7, drawing_id="d1", processed_png=make_png(7)))  # the first stroke: a "7"
    other_model = store.add(make_record(7, model="cnn", drawing_id="d1"))
    final = store.add(make_record(3, drawing_id="d1", processed_png=make_png(3)))  # both strokes: a "3"
    assert final.id == first.id != other_model.id
    rows, total = store.list(1, 50)
    assert total == 2 and {(r.model_name, r.predicted_digit) for r in rows} == {("svm", 3), ("cnn", 7)}
    row = store.get(first.id)
    assert row.uid == final.uid and row.drawing_id == "d1"
    assert store.get_image(first.id, "processed") == make_png(3)
    assert store.stats()["svm"]["predictions"] == 1


def test_a_label_stays_while_the_drawing_changes_and_a_new_drawing_is_a_new_row(store, make_record):
    first = store.add(make_record(1, drawing_id="d2"))
    assert store.set_feedback(first.id, 7)
    assert (store.get(first.id).drawn_digit, store.get(first.id).correct) == (7, False)
    store.add(make_record(7, drawing_id="d2"))  # one more stroke: now it reads 7
    row = store.get(first.id)
    assert (row.predicted_digit, row.drawn_digit, row.correct) == (7, 7, True)
    assert store.add(make_record(7, drawing_id="d3")).id != first.id
    assert store.add(make_record(7)).id not in (first.id, None)  # no drawing id: a row of its own
    assert store.count() == 3


def test_the_stroke_sent_last_stays_when_an_earlier_one_is_answered_after_it(store, make_record):
    """Two strokes of a drawing in flight at once (the UI's live requests under load, on two workers): the one
    sent earlier, answered later, replaced the row, so a partial picture stayed stored and a label by the last
    stroke's uid was a 404 (a probe, session 45: 7 of 20 drawings). A record is timed when its request arrived;
    an older one leaves the row as it is, and a label it brings still reaches the drawing."""
    sent = datetime.now(UTC)
    last = store.add(make_record(3, drawing_id="race", timestamp=sent))
    earlier = store.add(make_record(7, drawing_id="race", timestamp=sent - timedelta(milliseconds=30)))
    assert earlier.stored == "database" and earlier.id == last.id
    row = store.get(last.id)
    assert (row.predicted_digit, row.uid) == (3, last.uid), row
    assert store.set_feedback_by_uid(last.uid, 3)  # (it was "There is no prediction ...")
    labelled = store.add(make_record(1, drawn=8, drawing_id="race2", timestamp=sent))
    store.add(make_record(7, drawn=3, drawing_id="race2", timestamp=sent - timedelta(milliseconds=30)))
    row = store.get(labelled.id)
    assert (row.predicted_digit, row.drawn_digit, row.correct) == (1, 8, False), row  # (its own label is later)
    unlabelled = store.add(make_record(1, drawing_id="race3", timestamp=sent))
    store.add(make_record(7, drawn=1, drawing_id="race3", timestamp=sent - timedelta(milliseconds=30)))
    row = store.get(unlabelled.id)
    assert (row.predicted_digit, row.drawn_digit, row.correct) == (1, 1, True), row
    assert store.count() == 3


def test_not_a_digit_label(store, make_record):
    result = store.add(make_record(4))
    assert store.set_feedback_by_uid(result.uid, NOT_A_DIGIT)
    row = store.get(result.id)
    assert (row.not_digit, row.drawn_digit, row.correct) == (True, None, None)
    assert store.stats()["svm"]["labelled"] == 0  # not in digit accuracy
    assert store.set_feedback(result.id, 4)  # changed their mind: a digit after all
    row = store.get(result.id)
    assert (row.not_digit, row.drawn_digit, row.correct) == (None, 4, True)


def test_drawing_updates_and_labels_replayed_from_the_spool(absent_db, tmp_path, make_record, open_store):
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        strokes = [store.add(make_record(d, drawing_id="d9")) for d in (1, 7, 4)]
        assert {r.stored for r in strokes} == {"spool"}
        assert store.set_feedback_by_uid(strokes[-1].uid, NOT_A_DIGIT)
        bring_back()
        assert store.wait_drained(timeout=60)
        rows, total = store.list(1, 50)
        assert total == 1
        assert (rows[0].predicted_digit, rows[0].uid, rows[0].not_digit) == (4, strokes[-1].uid, True)
    finally:
        store.close()


def test_feedback_by_an_earlier_strokes_uid_survives_a_later_stroke_in_the_same_replay(
    absent_db, tmp_path, make_record, open_store
):
    """The label is given to the drawing's first stroke (the uid the person saw), then one more stroke
    comes: all three lines are replayed in one batch. Applied in spool order, the label lands on the row
    before the later stroke takes over its uid, and stays, as it would have without the outage."""
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        first = store.add(make_record(1, drawing_id="d-fb"))
        assert store.set_feedback_by_uid(first.uid, 7)
        last = store.add(make_record(7, drawing_id="d-fb"))
        bring_back()
        assert store.wait_drained(timeout=60)
        _assert_one_row_labelled_7(store, last.uid)
    finally:
        store.close()


def test_feedback_by_an_earlier_strokes_uid_given_after_a_later_stroke_reaches_the_drawing(
    absent_db, tmp_path, make_record, open_store
):
    """A quick person labels what they saw while their next stroke's prediction is on its way: the label by
    the first stroke's uid is spooled after the second stroke. Replayed, it still labels the drawing's row,
    as a label by the row's id would have without the outage (another drawing's row is not touched)."""
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        first = store.add(make_record(1, drawing_id="d-late"))
        last = store.add(make_record(7, drawing_id="d-late"))
        other = store.add(make_record(1, drawing_id="d-other"))
        assert store.set_feedback_by_uid(first.uid, 7)
        bring_back()
        assert store.wait_drained(timeout=60)
        rows, total = store.list(1, 50)
        assert total == 2
        by_uid = {r.uid: r for r in rows}
        assert (by_uid[last.uid].predicted_digit, by_uid[last.uid].drawn_digit, by_uid[last.uid].correct) == (7, 7, True)
        assert by_uid[other.uid].drawn_digit is None
    finally:
        store.close()


def test_a_spool_replayed_twice_keeps_the_drawings_latest_prediction(
    absent_db, tmp_path, make_record, open_store
):
    """A crash after the replay's commit but before the spool is truncated replays it again (here: a copy
    of it, adopted as the spool of a process that died). The earlier stroke's uid is no longer in the table,
    yet it must not bring the earlier prediction back over the later one."""
    url, bring_back = absent_db
    spool_root = tmp_path / "spool"
    store = open_store(url, spool_root / "me")
    try:
        store.add(make_record(1, drawing_id="d-twice"))
        last = store.add(make_record(7, drawing_id="d-twice"))
        assert store.set_feedback_by_uid(last.uid, 7)
    finally:
        store.close()  # not drained: the spool stays on disk
    shutil.copytree(spool_root / "me", spool_root / "crashed")  # the same lines, to be replayed again
    bring_back()
    store = open_store(url, spool_root / "me")
    try:
        assert store.wait_drained(timeout=60)
        _assert_one_row_labelled_7(store, last.uid)
    finally:
        store.close()
    assert not (spool_root / "crashed").exists()  # it was adopted and replayed


def _assert_one_row_labelled_7(store, uid: str) -> None:
    """The drawing is one row: the latest stroke's prediction (7, `uid`) with its label 7 kept."""
    rows, total = store.list(1, 50)
    assert total == 1
    row = rows[0]
    assert (row.uid, row.predicted_digit, row.drawn_digit, row.correct) == (uid, 7, 7, True)


def test_a_label_spooled_by_another_worker_reaches_a_stroke_that_a_later_one_replaced(
    db_url, tmp_path, make_record, open_store
):
    """Two workers during an outage: one spooled a stroke, the other the label given by that stroke's uid.
    After the outage a later stroke of the drawing was stored directly, so the replayed stroke never holds
    the row, and its uid is nowhere in the table: the label waited for it for good, after the API had
    answered 200 "queued" (9 of 20 drawings in the probe). Now it labels the drawing's row, replayed in
    either order, and feedback by that uid afterwards (a worker back in database mode) finds it too."""
    from datetime import UTC, datetime, timedelta

    from digitlab.store.spool import Spool

    t0 = datetime.now(UTC) - timedelta(seconds=30)
    spool_root = tmp_path / "spool"
    store = open_store(db_url, spool_root / "main")
    try:
        for drawing, worker_order in (("d-ab", ("a", "b")), ("d-ba", ("b", "a"))):
            store.add(make_record(1, drawing_id=drawing, timestamp=t0))
            stroke = make_record(4, drawing_id=drawing, timestamp=t0 + timedelta(seconds=5))
            label = {"op": "feedback", "uid": stroke.uid, "digit": 4, "at": (t0 + timedelta(seconds=6)).isoformat()}
            later = store.add(make_record(9, drawing_id=drawing, timestamp=t0 + timedelta(seconds=20)))
            for name, line in zip(worker_order, ({"op": "add", "record": stroke.to_json()}, label), strict=True):
                dead = Spool(spool_root / f"{drawing}-{name}").open()  # left by a worker that is gone
                dead.append(line)
                dead.close()
            other = open_store(db_url, spool_root / f"z-{drawing}")  # adopts and replays both, in name order
            try:
                assert other.wait_drained(timeout=60)
            finally:
                other.close()
            row = store.get(later.id)
            assert (row.uid, row.predicted_digit, row.drawn_digit, row.correct) == (later.uid, 9, 4, False), drawing
            assert store.set_feedback_by_uid(stroke.uid, 9) is True  # by that uid, now in database mode
            assert store.get(later.id).drawn_digit == 9
        assert store.count() == 2
    finally:
        store.close()


def test_two_workers_writing_one_drawing_of_two_models_in_opposite_orders_both_commit(db_url, backend, make_record):
    """Two API workers' group commits hold the same drawing's rows of two models in opposite orders. They
    deadlocked on PostgreSQL (a probe, session 27: answers unsaved, the store in outage mode). Each
    transaction here pauses after its first row until the other has written one too (or 1 s)."""
    import threading

    from sqlalchemy import event

    from digitlab.store.db import make_engine
    from digitlab.store.repository import Repository

    engines = [make_engine(db_url) for _ in range(2)]
    first_rows = threading.Barrier(2, timeout=1.0)
    for engine in engines:
        @event.listens_for(engine, "after_cursor_execute")
        def wait_for_the_other(conn, cursor, statement, *args, _seen=set()):  # noqa: B006 - one per engine
            if statement.lstrip().upper().startswith("INSERT") and id(conn) not in _seen:
                _seen.add(id(conn))
                try:
                    first_rows.wait()
                except threading.BrokenBarrierError:
                    pass  # the other waits on this one's row lock: go on

    batches = [
        [make_record(1, model="cnn", drawing_id="dd"), make_record(1, model="svm", drawing_id="dd")],
        [make_record(2, model="svm", drawing_id="dd"), make_record(2, model="cnn", drawing_id="dd")],
    ]
    outcome: dict[int, object] = {}

    def write(k: int) -> None:
        try:
            outcome[k] = Repository(engines[k]).insert_many(batches[k])
        except Exception as exc:  # noqa: BLE001 - the assertion names it
            outcome[k] = exc

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for engine in engines:
        engine.dispose()
    assert all(isinstance(ids, list) and len(ids) == 2 for ids in outcome.values()), outcome
    assert sorted(outcome[0]) == sorted(outcome[1])  # the same two rows, one per model
