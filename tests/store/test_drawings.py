"""One drawing, one record (per model): live predictions with a drawing id update the drawing's row; and
the "not a digit" label. On both backends, through PredictionStore, including a replay from the spool."""

from __future__ import annotations

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
