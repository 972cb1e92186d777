"""Read numbers (`read_numbers`, migration 0005) on SQLite and PostgreSQL: insert, feedback, paging, image."""

from __future__ import annotations

import base64
import io

import pytest
from pydantic import ValidationError

from digitlab.store.db import make_engine
from digitlab.store.numbers import (
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
    assert first == again == last != other
    row = get_number(engine, last)
    assert row.text == "307" and row.true_text == "307" and row.correct is True
    assert list_numbers(engine)[1] == 2


def test_confirmed_numbers_give_labelled_digit_crops(engine, store, make_png):
    def with_crops(text: str, **kwargs) -> NumberRecord:
        record = number(text, **kwargs)
        for i, d in enumerate(record.digits):
            d["processed_image"] = base64.b64encode(make_png(int(text[i]), seed=i)).decode()
        return record

    insert_number(engine, with_crops("307", true_text="301"))  # confirmed: 3, 0, 1 with their crops
    insert_number(engine, with_crops("42"))  # not confirmed: nothing to learn from
    insert_number(engine, with_crops("55", true_text="558"))  # a digit missed: labels unknown
    crops = list(labelled_digit_crops(engine))
    assert [label for label, _ in crops] == [3, 0, 1]
    assert crops[2][1] == make_png(7, seed=2)  # the crop read as 7, labelled 1 by the writer
    out = io.StringIO()
    assert store.export_csv(out) == 3  # the dataset export includes them
    assert [line.split(",")[0] for line in out.getvalue().splitlines()[1:]] == ["3", "0", "1"]
