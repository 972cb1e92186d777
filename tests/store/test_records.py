"""PredictionRecord validation and its spool form (no database involved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from digitlab.store import PredictionRecord
from digitlab.store.records import parse_probabilities, utc_naive


def test_defaults_and_normalisation(make_record):
    rec = make_record(3, drawn=8, pen_color="rgba(255, 255, 255, 1.0)")
    assert len(rec.uid) == 32 and rec.timestamp.tzinfo is not None
    assert rec.probability == pytest.approx(0.91) and rec.correct is False
    assert rec.pen_color == "rgba(255, 255, 2"  # cut to VARCHAR(16): the record stays writable
    assert make_record(3).correct is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"predicted_digit": 10},
        {"predicted_digit": True},
        {"drawn_digit": -1},
        {"probabilities": [0.1] * 9},
        {"probabilities": [float("nan")] * 10},
        {"source": "cli"},
        {"uid": ""},
    ],
)
def test_invalid_records_are_refused(kwargs):
    base = {"model_name": "svm", "predicted_digit": 1, "probabilities": [0.1] * 10}
    with pytest.raises(ValueError):
        PredictionRecord(**{**base, **kwargs})


def test_json_round_trip(make_record, make_png):
    rec = make_record(2, drawn=2, image_png=b"\x00\xffbinary", processed_png=make_png(2), latency_ms=3)
    again = PredictionRecord.from_json(rec.to_json())
    assert again == rec


def test_timestamps_are_stored_as_naive_utc():
    aware = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert utc_naive(aware) == datetime(2026, 5, 1, 12, 0)
    assert utc_naive(datetime(2026, 5, 1, 12, 0)) == datetime(2026, 5, 1, 12, 0)
    rec = PredictionRecord(model_name="m", predicted_digit=0, probabilities=[0.1] * 10, timestamp=aware)
    assert rec.to_row()["timestamp"] == datetime(2026, 5, 1, 12, 0)
    assert rec.timestamp.astimezone(UTC).hour == 12


def test_lenient_probability_parsing():
    assert parse_probabilities("[0.5, 0.5]") == [0.5, 0.5]
    assert parse_probabilities("{0.5,0.25}") == [0.5, 0.25]  # a PostgreSQL array literal
    assert parse_probabilities("0.5 0.25") == [0.5, 0.25]
    assert parse_probabilities("garbage") is None
    assert parse_probabilities(None) is None
