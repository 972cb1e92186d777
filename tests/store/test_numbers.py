"""Read numbers (`read_numbers`, migration 0005) on SQLite and PostgreSQL: insert, feedback, paging, image."""

from __future__ import annotations

import base64
import io
import json

import pytest
from pydantic import ValidationError

from digitlab.store.db import make_engine
from digitlab.store.numbers import (
    NOT_A_NUMBER,
    NumberRecord,
    get_number,
    get_number_image,
    insert_number,
    labelled_digit_crops,
    list_numbers,
    set_true_text,
)


@pytest.fixture
def engine(shared_url, backend):
    """The shared migrated database with `read_numbers` emptied (before and after: other store tests
    export from the same database)."""
    engine = make_engine(shared_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM read_numbers")
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM read_numbers")
    engine.dispose()


def number(text: str = "2024", **kwargs) -> NumberRecord:
    digits = [
        {"digit": int(c), "confidence": 0.9, "box": [10 * i, 0, 8, 20]}
        for i, c in enumerate(text)
        if c.isdigit()
    ]
    fields = {"model_name": "cnn", "text": text, "confidence": 0.9 ** len(text), "uncertain": False}
    return NumberRecord(**{**fields, "digits": digits, **kwargs})


def test_insert_and_read_back(engine):
    number_id = insert_number(engine, number("307", image_png=b"\x89PNG...", session_id="s1", source="ui"))
    row = get_number(engine, number_id)
    assert row.text == "307" and row.model_name == "cnn" and row.session_id == "s1" and row.source == "ui"
    assert [d["digit"] for d in row.digits] == [3, 0, 7]
    assert row.digits[2]["box"] == [20, 0, 8, 20]
    assert row.has_image and get_number_image(engine, number_id) == b"\x89PNG..."
    assert row.true_text is None and row.correct is None
    assert row.timestamp is not None and row.timestamp.tzinfo is not None


def test_true_text_given_with_the_reading(engine):
    right = get_number(engine, insert_number(engine, number("42", true_text="42")))
    wrong = get_number(engine, insert_number(engine, number("47", true_text="41")))
    assert (right.correct, wrong.correct) == (True, False)


def test_feedback_sets_true_text_and_correct(engine):
    number_id = insert_number(engine, number("1999"))
    assert set_true_text(engine, number_id, "1999").correct is True
    row = set_true_text(engine, number_id, "1990")
    assert row.true_text == "1990" and row.correct is False
    assert get_number(engine, number_id).true_text == "1990"
    assert set_true_text(engine, number_id + 1000, "1") is None


def test_pages_newest_first(engine):
    ids = [insert_number(engine, number(str(n))) for n in range(10, 17)]
    first, total = list_numbers(engine, page=1, page_size=3)
    second, _ = list_numbers(engine, page=2, page_size=3)
    assert total == 7
    assert [r.id for r in first + second] == ids[::-1][:6]
    assert not first[0].has_image and get_number_image(engine, ids[0]) is None


def test_pages_filter_by_model_answer_and_period(engine):
    from datetime import UTC, datetime

    right = insert_number(engine, number("42", true_text="42", timestamp=datetime(2026, 1, 2, 10, tzinfo=UTC)))
    wrong = insert_number(engine, number("47", true_text="41", model_name="svm",
                                         timestamp=datetime(2026, 1, 3, 10, tzinfo=UTC)))  # fmt: skip
    unlabelled = insert_number(engine, number("5", timestamp=datetime(2026, 1, 4, 10, tzinfo=UTC)))

    def ids(**filters):
        rows, total = list_numbers(engine, page_size=10, **filters)
        assert total == len(rows)
        return [r.id for r in rows]

    assert ids() == [unlabelled, wrong, right]
    assert ids(model="cnn") == [unlabelled, right] and ids(model="nope") == []
    assert ids(correct=True) == [right] and ids(correct=False) == [wrong]  # an unlabelled number is neither
    assert ids(since=datetime(2026, 1, 3, 10, tzinfo=UTC)) == [unlabelled, wrong]  # inclusive
    assert ids(until=datetime(2026, 1, 3, 10, tzinfo=UTC)) == [right]  # exclusive
    assert ids(model="svm", correct=False, since=datetime(2026, 1, 1, tzinfo=UTC)) == [wrong]


def test_hostile_text_is_stored_as_data_not_sql(engine):
    with pytest.raises(ValidationError):
        number("1'; DROP TABLE read_numbers;--")
    number_id = insert_number(engine, number("12", session_id="x'); DROP TABLE read_numbers;--"))
    assert get_number(engine, number_id).session_id.startswith("x');")
    assert list_numbers(engine)[1] == 1


def test_records_refuse_what_the_table_cannot_hold():
    with pytest.raises(ValidationError):
        number("12a")
    with pytest.raises(ValidationError):
        number("12", true_text="")
    with pytest.raises(ValidationError):
        number("12", confidence=1.5)


def test_live_reads_of_one_drawing_keep_one_row(engine):
    first = insert_number(engine, number("3", drawing_id="d-1"))
    set_true_text(engine, first, "307")
    again = insert_number(engine, number("30", drawing_id="d-1"))
    last = insert_number(engine, number("307", drawing_id="d-1"))
    other = insert_number(engine, number("5", drawing_id="d-2"))
    assert first == again == last and other == first + 1  # (an upsert took an id per read: they skipped)
    row = get_number(engine, last)
    assert row.text == "307" and row.true_text == "307" and row.correct is True
    assert list_numbers(engine)[1] == 2


def test_the_reading_of_the_stroke_sent_last_stays_when_an_earlier_one_is_stored_after_it(engine):
    """Two strokes of a number in flight at once: the reading of the one sent earlier, stored later, replaced the
    row with a partial number (a probe, session 45: 8 of 8 on `/read`). An older reading leaves the row as it
    is; the answer it brings still reaches it."""
    from datetime import UTC, datetime, timedelta

    sent = datetime.now(UTC)
    last = insert_number(engine, number("307", drawing_id="race", timestamp=sent))
    earlier = insert_number(engine, number("30", drawing_id="race", timestamp=sent - timedelta(milliseconds=30),
                                           true_text="307"))  # fmt: skip
    assert earlier == last
    row = get_number(engine, last)
    assert (row.text, row.true_text, row.correct) == ("307", "307", True), row
    assert list_numbers(engine)[1] == 1


def test_confirmed_numbers_give_labelled_digit_crops(engine, store, make_png):
    def with_crops(text: str, **kwargs) -> NumberRecord:
        record = number(text, **kwargs)
        for i, d in enumerate(record.digits):
            d["processed_image"] = base64.b64encode(make_png(int(text[i]), seed=i)).decode()
        return record

    insert_number(engine, with_crops("307", true_text="301"))  # confirmed: 3, 0, 1 with their crops
    insert_number(engine, with_crops("42"))  # not confirmed: nothing to learn from
    insert_number(engine, with_crops("55", true_text="558"))  # a digit missed: labels unknown
    smiley = insert_number(engine, with_crops("7"))
    set_true_text(engine, smiley, NOT_A_NUMBER)  # one mark read, "not a number": no digit to learn (int("-"))
    assert get_number(engine, smiley).not_number is True and get_number(engine, smiley).correct is False
    crops = list(labelled_digit_crops(engine))
    assert [label for label, _ in crops] == [3, 0, 1]
    assert crops[2][1] == make_png(7, seed=2)  # the crop read as 7, labelled 1 by the writer
    out = io.StringIO()
    assert store.export_csv(out) == 3  # the dataset export includes them
    assert [line.split(",")[0] for line in out.getvalue().splitlines()[1:]] == ["3", "0", "1"]


def test_the_same_crop_confirmed_again_is_one_sample_and_a_contradicted_one_none(engine, store, make_png):
    """One picture read three times and confirmed "23", "23" and "24": its second digit's crop was exported three
    times, labelled 3, 3 and 4 (a probe, session 33), where a drawing given two labels is left out."""

    def with_crops(text: str, **kwargs) -> NumberRecord:
        record = number(text, **kwargs)
        for i, d in enumerate(record.digits):
            d["processed_image"] = base64.b64encode(make_png(int(text[i]), seed=i)).decode()
        return record

    for answer in ("23", "23", "24"):
        insert_number(engine, with_crops("23", true_text=answer, session_id="again"))
    crops = list(labelled_digit_crops(engine))
    assert crops == [(2, make_png(2, seed=0))]  # the 2 once; the 3, called 3 and 4, left out
    out = io.StringIO()
    assert store.export_csv(out) == 1


# --- the outage spool: a number is stored exactly once, in order, with its feedback ----------------------


def test_numbers_read_while_the_database_is_away_are_replayed_once(absent_db, tmp_path, open_store):
    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        plain = number("2024", image_png=b"\x89PNG...", session_id="out")
        live = [number(t, drawing_id="d-out", session_id="out") for t in ("3", "30", "307")]
        results = [store.add_number(r) for r in (plain, *live)]
        assert {r.stored for r in results} == {"spool"} and all(r.id is None for r in results)
        assert [r.uid for r in results] == [r.uid for r in (plain, *live)]
        # answers by uid while spooled: the plain number, and the drawing's latest reading; then one more
        # stroke (a later reading of the same drawing replaces its uid, so order matters on replay)
        assert store.set_number_feedback("2025", uid=plain.uid).stored == "spool"
        assert store.set_number_feedback("307", uid=live[2].uid).stored == "spool"
        later = number("3071", drawing_id="d-out", session_id="out")
        assert store.add_number(later).stored == "spool"
        assert store.health() == {"database": "unavailable", "spool": 7}

        bring_back()
        assert store.wait_drained(timeout=30)
        engine = store.engine
        rows, total = list_numbers(engine)
        assert total == 2  # the plain number, and one row for the drawing
        by_uid = {r.uid: r for r in rows}
        first = by_uid[plain.uid]
        assert (first.text, first.true_text, first.correct, first.has_image) == ("2024", "2025", False, True)
        drawing = by_uid[later.uid]
        assert (drawing.text, drawing.true_text, drawing.correct) == ("3071", "307", False)
        # the time it was read, not the time it was replayed
        assert abs((first.timestamp - plain.timestamp).total_seconds()) < 1e-3

        # a replay after a crash between the database write and the spool truncation changes nothing
        # (the same lines again: the answer by the stroke's uid lands on the drawing's row as before)
        ops = [{"op": "number", "record": r} for r in (plain, *live)]
        ops.append({"op": "number_feedback", "uid": live[2].uid, "true_text": "307"})
        ops.append({"op": "number", "record": later})
        with engine.begin() as conn:
            store._apply(conn, ops)
        again, total = list_numbers(engine)
        assert total == 2 and {r.uid: (r.text, r.true_text) for r in again} == {
            plain.uid: ("2024", "2025"),
            later.uid: ("3071", "307"),
        }
        # back in database mode: numbers and answers go straight to the table
        direct = store.add_number(number("11"))
        assert direct.stored == "database" and direct.id is not None
        answered = store.set_number_feedback("11", id=direct.id)
        assert answered.stored == "database" and answered.number.correct is True
        assert store.set_number_feedback("1", uid="0" * 32) is None
        # an answer by a replayed stroke's uid, replaced since by a later stroke: its drawing's row, stored (it
        # was answered "queued in the spool", id and text null, with nothing spooled: a probe, session 45)
        by_stroke = store.set_number_feedback("3071", uid=live[0].uid)
        assert by_stroke.stored == "database" and by_stroke.number.uid == later.uid, by_stroke
        assert (by_stroke.number.text, by_stroke.number.true_text, by_stroke.number.correct) == ("3071", "3071", True)
        assert store.health()["spool"] == 0
    finally:
        store.close()


def test_spooled_number_lines_round_trip():
    record = number("42", image_png=b"\x00\x01binary", drawing_id="d", true_text="42", source="upload")
    back = NumberRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert back == record


def test_a_number_whose_write_hangs_is_spooled_after_the_write_deadline(db_url, tmp_path, open_store, monkeypatch):
    """A `/read` waited as long as its pooled connection hung (16-60 s in a probe: backends stopped while the server
    took new connections, so the `SELECT 1` probe said all was well), where a prediction is spooled after the
    write deadline. A number is too; should the stuck insert land after all, the replay skips its uid."""
    import threading
    import time

    from digitlab.store import numbers as numbers_module

    release = threading.Event()
    real_insert = numbers_module.insert_number

    def stuck_insert(engine, record):
        release.wait(30)
        return real_insert(engine, record)

    store = open_store(db_url, tmp_path / "spool" / "me", write_deadline=1.0)
    try:
        monkeypatch.setattr(numbers_module, "insert_number", stuck_insert)
        record = number("2024", session_id="stuck")
        started = time.monotonic()
        result = store.add_number(record)
        assert result.stored == "spool" and result.uid == record.uid
        assert time.monotonic() - started < 3.0
        # not "ok": "catching_up" once the spool's probe (SELECT 1 answers) starts a replay the stuck insert holds
        assert store.health()["database"] in ("unavailable", "catching_up")
        answered = store.set_number_feedback("2025", uid=record.uid)  # spooled after it, or (the database answers
        assert answered is not None and answered.stored in ("spool", "database")  # SELECT 1) after its replay
        release.set()  # the stuck write lands after all; then the replay
        monkeypatch.setattr(numbers_module, "insert_number", real_insert)
        assert store.wait_drained(timeout=30)
        rows, total = list_numbers(store.engine)
        assert total == 1 and (rows[0].uid, rows[0].text, rows[0].true_text) == (record.uid, "2024", "2025")
    finally:
        release.set()
        store.close()
