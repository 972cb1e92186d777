"""`digitlab.ui.client`: every failure becomes a one-sentence `ApiError`; answers are parsed leniently."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC

import httpx
import pytest

from digitlab.ui.client import ApiError, ApiUnavailable, DigitlabClient, _prediction

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PREDICTION = {
    "id": 12, "uid": "ab" * 16, "model": "svm", "model_version": "1.0.0", "digit": 7, "confidence": 0.9,
    "probabilities": [0.0] * 7 + [0.9, 0.05, 0.05], "uncertain": False, "processed_image": PNG,
    "latency_ms": 4.2, "logged": True,
}  # fmt: skip


def client_for(handler) -> DigitlabClient:
    return DigitlabClient("http://api.test", transport=httpx.MockTransport(handler))


def test_health_and_models():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "degraded", "models": {"svm": "ready", "cnn": "missing"},
                                             "database": "unavailable", "spool": 3})  # fmt: skip
        return httpx.Response(200, json=[{"name": "svm", "metrics": {"mnist_test_accuracy": 0.99}}])

    c = client_for(handler)
    h = c.health()
    assert h.ready_models == ["svm"] and not h.database_ok and h.spool == 3
    assert c.models()[0]["name"] == "svm"


def test_predict_sends_the_form_and_parses_the_answer():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.read()
        seen["type"] = request.headers["content-type"]
        return httpx.Response(200, json=PREDICTION)

    p = client_for(handler).predict(b"png-bytes", "svm", pen_color="#000000", background_color="#ffffff",
                                    session_id="s1")  # fmt: skip
    assert seen["type"].startswith("multipart/form-data")
    body = seen["body"]
    for part in (
        b'name="image"',
        b"png-bytes",
        b'name="model"',
        b"svm",
        b'name="source"',
        b"ui",
        b"#ffffff",
        b"s1",
    ):
        assert part in body
    assert b"true_digit" not in body  # absent fields are not sent
    assert (p.id, p.digit, p.model, p.logged) == (12, 7, "svm", True)
    assert len(p.probabilities) == 10 and p.processed_png.startswith(b"\x89PNG")


def test_predict_all_and_agreement():
    answer = {"predictions": [dict(PREDICTION, model="svm"), dict(PREDICTION, model="cnn", digit=1)],
              "processed_image": PNG}  # fmt: skip
    result = client_for(lambda r: httpx.Response(200, json=answer)).predict_all(b"png")
    assert [p.model for p in result.predictions] == ["svm", "cnn"]
    assert not result.agree and set(result.votes) == {7, 1}


@pytest.mark.parametrize(
    ("prediction_id", "uid", "answer", "path", "saved", "queued"),
    [
        (12, "ab" * 16, {"stored": "database", "queued": False}, "/api/v1/predictions/12/feedback", True, False),
        (12, "ab" * 16, {"stored": "spool", "queued": True}, "/api/v1/predictions/12/feedback", False, True),
        (None, "ab" * 16, {"stored": "spool", "queued": True}, f"/api/v1/predictions/uid/{'ab' * 16}/feedback",
         False, True),
    ],
)  # fmt: skip
def test_feedback_by_id_or_uid(prediction_id, uid, answer, path, saved, queued):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"], seen["json"] = request.url.path, json.loads(request.read())
        return httpx.Response(200, json=answer)

    pred = _prediction(dict(PREDICTION, id=prediction_id, uid=uid))
    result = client_for(handler).feedback(pred, 3)
    assert seen == {"path": path, "json": {"true_digit": 3}}
    assert (result.saved, result.queued) == (saved, queued)
    assert ("queued" in result.message) == queued


@pytest.mark.parametrize(
    ("reading", "path"),
    [
        ({"id": 17, "uid": "cd" * 16}, "/api/v1/numbers/17/feedback"),
        ({"id": None, "uid": "cd" * 16}, f"/api/v1/numbers/uid/{'cd' * 16}/feedback"),  # spooled
    ],
)
def test_number_feedback_by_id_or_uid(reading, path):  # (and "not a number" below)
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"], seen["json"] = request.url.path, json.loads(request.read())
        return httpx.Response(200, json={"queued": reading["id"] is None})

    answer = client_for(handler).number_feedback(reading, "307")
    assert seen == {"path": path, "json": {"true_text": "307"}}
    assert answer["queued"] is (reading["id"] is None)
    with pytest.raises(ApiError, match="not recorded"):
        client_for(handler).number_feedback({"id": None, "uid": None}, "307")


def test_api_error_body_becomes_the_message():
    body = {"detail": "nothing drawn: the image is blank. Draw a digit and try again.", "code": "empty_image"}
    c = client_for(lambda r: httpx.Response(400, json=body))
    with pytest.raises(ApiError) as info:
        c.predict(b"png")
    assert not isinstance(info.value, ApiUnavailable)
    assert info.value.code == "empty_image" and info.value.status == 400
    assert str(info.value).startswith("Nothing drawn")  # capitalised, as a sentence


def test_model_not_ready_is_an_api_error_not_an_outage():
    body = {"detail": "The model svm is still training.", "code": "model_not_ready"}
    with pytest.raises(ApiError) as info:
        client_for(lambda r: httpx.Response(503, json=body)).predict(b"png", "svm")
    assert not isinstance(info.value, ApiUnavailable) and info.value.code == "model_not_ready"


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_mean_unavailable(status):
    with pytest.raises(ApiUnavailable) as info:
        client_for(lambda r: httpx.Response(status, text="<html>bad gateway</html>")).health()
    assert "not answering" in str(info.value)


def test_garbage_answer_is_a_friendly_error():
    with pytest.raises(ApiError) as info:
        client_for(lambda r: httpx.Response(200, text="<html>")).stats()
    assert info.value.code == "bad_response" and "does not understand" in str(info.value)


def test_timeouts_and_refusals_are_friendly():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ApiUnavailable, match="did not answer in time"):
        client_for(slow).health()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiUnavailable, match=rf"not reachable at http://127.0.0.1:{port}"):
        DigitlabClient(f"http://127.0.0.1:{port}").health()


def test_a_frozen_api_is_told_after_the_live_patience_not_the_read_timeout():
    """A server that takes connections and answers nothing (a frozen API): a stroke's prediction waited the
    whole 6 s read timeout, the page faded all along. Now the API is asked whether it answers at all after
    `patience`, and the probe's HEALTH_TIMEOUT later the page says so."""
    import time

    from digitlab.ui.client import HEALTH_TIMEOUT, READ_TIMEOUT

    with socket.socket() as frozen:  # the kernel takes the connections; nobody reads or answers them
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        client = DigitlabClient(f"http://127.0.0.1:{frozen.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(ApiUnavailable, match="did not answer in time"):
            client.predict(b"png", patience=0.3)
        took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(ApiUnavailable, match="did not answer in time"):
            client.models()  # (the model picker's list: no database behind it, as quick as /health)
        listed = time.monotonic() - started
        client.close()
    assert took < 0.3 + HEALTH_TIMEOUT + 1.0 < READ_TIMEOUT, took
    assert listed < HEALTH_TIMEOUT + 1.0, listed


def test_an_answer_to_a_frozen_api_is_told_after_the_live_patience():
    """An answer clicked while the API was frozen held the page for the whole read timeout and more (14 s in a
    newcomer's tour, the Clear clicked meanwhile carried out when it woke, wiping a digit drawn since): feedback
    is a live call too (`LIVE_PATIENCE`), then kept by the page and sent when the API is back."""
    import time

    from digitlab.ui.client import HEALTH_TIMEOUT, LIVE_PATIENCE

    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        client = DigitlabClient(f"http://127.0.0.1:{frozen.getsockname()[1]}")
        prediction = _prediction(dict(PREDICTION, id=3))
        for send in (lambda: client.feedback(prediction, 7), lambda: client.number_feedback({"id": 4}, "42")):
            started = time.monotonic()
            with pytest.raises(ApiUnavailable, match="did not answer in time"):
                send()
            assert time.monotonic() - started < LIVE_PATIENCE + HEALTH_TIMEOUT + 1.0
        client.close()


def test_a_slow_answer_from_a_live_api_is_waited_for():
    """The API waits up to 5 s for a locked or frozen database before it spools a prediction's record: while
    it answers the probe, a live call waits for its answer (a short timeout called that an API outage)."""
    import time

    probes = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/models":
            probes.append(time.monotonic())
            return httpx.Response(200, json=[])
        time.sleep(0.8)
        return httpx.Response(200, json=dict(PREDICTION, id=None, logged=True))

    client = client_for(handler)
    assert client.predict(b"png", patience=0.2).digit == 7 and len(probes) == 1
    assert client.predict(b"png", patience=5.0).digit == 7 and len(probes) == 1  # answered in time: no probe


def test_history_query_parameters():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(dict(request.url.params))
        return httpx.Response(200, json={"items": [], "total": 0, "page": 2, "page_size": 10})

    from datetime import datetime

    page = client_for(handler).predictions(page=2, page_size=10, model="svm", correct=False,
                                           since=datetime(2026, 1, 2, tzinfo=UTC))  # fmt: skip
    assert seen == {"page": "2", "page_size": "10", "model": "svm", "correct": "false",
                    "since": "2026-01-02T00:00:00+00:00"}  # fmt: skip
    assert page["total"] == 0


def test_admin_token_is_sent():
    seen = {}

    def handler(request):
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, content=b"label,pixel0\n")

    c = DigitlabClient("http://api.test", token="s3cret", transport=httpx.MockTransport(handler))
    assert c.export_csv().startswith(b"label")
    assert seen["auth"] == "Bearer s3cret"


def test_a_refused_admin_read_tells_the_operator_how_to_start_the_ui():
    """The API's 401 asks for an HTTP header, which a person in a browser cannot send: History said "not available
    right now: ... send 'Authorization: Bearer <DIGITLAB_ADMIN_TOKEN>'" under an outage icon."""

    def handler(request):
        return httpx.Response(401, json={"detail": "This needs the admin token: send 'Authorization: Bearer "
                                                   "<DIGITLAB_ADMIN_TOKEN>'.", "code": "unauthorized"})  # fmt: skip

    with pytest.raises(ApiError) as caught:
        client_for(handler).predictions(page=1, page_size=10)
    assert caught.value.code == "unauthorized" and caught.value.status == 401
    said = str(caught.value)  # in a person's words (the page folds how to start the UI for its operator)
    assert "administrator's key" in said and "Bearer" not in said and "DIGITLAB_" not in said, said


def test_not_a_number_is_sent_as_such():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"id": 17, "uid": "cd" * 16, "text": "7", "true_text": None,
                                         "not_number": True, "correct": False, "stored": "database", "queued": False})

    answer = client_for(handler).number_feedback({"id": 17}, None, not_number=True)
    assert seen == [{"not_number": True}] and answer["not_number"] is True


def test_a_label_by_uid_before_its_record_is_replayed_is_sent_again_later():
    """Two replicas: the drawing was answered by one while it spooled (`id: null`), the label reached the other
    before the replay and got a 404, and the page said "not saved" for good (a probe, session 31: 5 of 5 lost).
    By uid, that 404 is "not there yet": `ApiUnavailable`, which the page keeps and sends again. By id, it stays
    a plain error (the record was deleted)."""
    gone = {"detail": "There is no prediction with that uid.", "code": "prediction_not_found"}
    c = client_for(lambda r: httpx.Response(404, json=gone))
    with pytest.raises(ApiUnavailable) as info:
        c.feedback(_prediction(dict(PREDICTION, id=None, uid="ab" * 16)), 3)
    assert info.value.code == "record_pending" and "sent again" in str(info.value)
    with pytest.raises(ApiUnavailable):
        c.number_feedback({"id": None, "uid": "cd" * 16}, "307")
    with pytest.raises(ApiError) as by_id:
        c.feedback(_prediction(dict(PREDICTION, id=7, uid="ab" * 16)), 3)
    assert not isinstance(by_id.value, ApiUnavailable) and by_id.value.code == "prediction_not_found"


def test_a_label_the_api_cannot_keep_while_too_many_wait_is_kept_and_sent_again():
    """During a database outage the API refuses a label by uid past its cap of answers waiting for drawings not
    stored yet: 503 `too_many_waiting_labels`, "… send it again once its drawing is stored". With its message it was
    a plain `ApiError`: the page said "not saved" for good and the answer was lost. Now `ApiUnavailable`, which the
    pages keep and send again (as an answer given while the service is away)."""
    full = {"detail": "Too many answers already wait for drawings that are not stored (yet) (at most 10,000 are "
                      "kept), so this one was not kept: send it again once its drawing is stored.",
            "code": "too_many_waiting_labels"}  # fmt: skip
    c = client_for(lambda r: httpx.Response(503, json=full))
    with pytest.raises(ApiUnavailable) as info:
        c.feedback(_prediction(dict(PREDICTION, id=None, uid="ab" * 16)), 3)
    assert info.value.code == "too_many_waiting_labels" and info.value.status == 503
    assert "sent again" in str(info.value) and "send it again" not in str(info.value)  # the page sends it, not the person
    with pytest.raises(ApiUnavailable) as number:
        c.number_feedback({"id": None, "uid": "cd" * 16}, "307")
    assert number.value.code == "too_many_waiting_labels"
    other = {"detail": "The model is not ready.", "code": "model_not_ready"}  # another 503 with a message stays one
    with pytest.raises(ApiError) as refused:
        client_for(lambda r: httpx.Response(503, json=other)).feedback(_prediction(dict(PREDICTION, id=7)), 3)
    assert not isinstance(refused.value, ApiUnavailable)
