"""The answer to a label whose prediction was deleted while the label was being given (an admin's DELETE racing
it): 2-5 of 40 such labels were answered 200 "queued in the spool", with nothing queued (an API probe)."""

from __future__ import annotations

import pytest

from digitlab.api.errors import ApiError
from digitlab.api.routes.predictions import _feedback_answer
from digitlab.store import PredictionStore
from digitlab.store.records import PredictionRecord
from digitlab.store.spool import Spool


def _record() -> PredictionRecord:
    return PredictionRecord(model_name="svm", predicted_digit=3, probabilities=[0.01] * 3 + [0.91] + [0.01] * 6)


@pytest.fixture
def store(tmp_path):
    s = PredictionStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "spool" / "me").start()
    yield s
    s.close()


def test_a_label_on_a_prediction_deleted_meanwhile_is_not_found(store):
    added = store.add(_record())
    assert store.set_feedback(added.id, 5)  # the label lands ...
    assert store.delete(added.id)  # ... and the row is deleted before the answer is written
    for key in ({"prediction_id": added.id, "uid": None}, {"prediction_id": None, "uid": added.uid}):
        with pytest.raises(ApiError) as caught:
            _feedback_answer(None, store, label=5, **key)
        assert caught.value.code == "prediction_not_found" and caught.value.status == 404


def test_a_label_for_a_record_waiting_in_another_spool_is_queued(store, tmp_path):
    waiting = _record()
    other = Spool(tmp_path / "spool" / "worker-2").open()  # a live worker still in spool mode holds the record
    other.append({"op": "add", "record": waiting.to_json()})
    try:
        answer = _feedback_answer(None, store, None, waiting.uid, 5)
        assert answer.queued and answer.stored == "spool" and answer.id is None
    finally:
        other.close(remove_if_empty=False)
    stored = store.add(_record())
    answer = _feedback_answer(None, store, stored.id, None, 5)
    assert not answer.queued and answer.stored == "database" and answer.correct is False
