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


def test_labels_past_the_cap_of_waiting_ones_get_a_clear_503(tmp_path, served_model_dir):
    """During an outage, labels by uids no record has (a hostile client) were each answered 200 "queued" and
    kept a day, without limit. Past `DIGITLAB_MAX_WAITING_LABELS` the answer is 503 `too_many_waiting_labels`
    (a sentence, no trace); the labels queued before stay queued, and a label by id still is."""
    import warnings

    from digitlab.api.main import create_app
    from digitlab.core.config import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    settings = Settings(_env_file=None, model_dir=served_model_dir, data_dir=tmp_path / "data", max_waiting_labels=2,
                        database_url=f"sqlite:///{(tmp_path / 'away' / 'app.db').as_posix()}")  # fmt: skip
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["database"] == "unavailable"
        for uid in ("a" * 32, "b" * 32):
            answer = c.post(f"/api/v1/predictions/uid/{uid}/feedback", json={"true_digit": 3})
            assert answer.status_code == 200 and answer.json()["queued"]
        for path, body in ((f"/api/v1/predictions/uid/{'c' * 32}/feedback", {"true_digit": 3}),
                           (f"/api/v1/numbers/uid/{'d' * 32}/feedback", {"true_text": "12"})):  # fmt: skip
            refused = c.post(path, json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "too_many_waiting_labels"
            assert "at most 2 are kept" in refused.json()["detail"] and "Traceback" not in refused.text
        assert c.post("/api/v1/predictions/7/feedback", json={"true_digit": 3}).json()["queued"]
        assert c.get("/health").json()["spool"] == 3
