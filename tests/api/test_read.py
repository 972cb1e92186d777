"""`POST /api/v1/read` over a real running server: a written number in, its digits (boxes, 28x28 inputs,
confidences) out. Bad input is covered by the shared corpus in test_bad_input.py (it runs on both routes)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from PIL import Image

from drawn_numbers import draw_number

from .conftest import MISSING, READY, TRAINING, assert_error, draw_digit

READ = "/api/v1/read"


def assert_reading(body: dict, text: str, image: bytes) -> None:
    width, height = Image.open(io.BytesIO(image)).size
    assert body["text"] == text
    assert len(body["digits"]) == len(text)
    xs = [d["box"][0] for d in body["digits"]]
    assert xs == sorted(xs)
    for d, char in zip(body["digits"], text, strict=True):
        assert d["digit"] == int(char)
        x, y, w, h = d["box"]
        assert 0 <= x < x + w <= width and 0 <= y < y + h <= height
        assert math.isclose(sum(d["probabilities"]), 1.0, abs_tol=1e-4)
        assert d["confidence"] == d["probabilities"][d["digit"]]
        assert Image.open(io.BytesIO(base64.b64decode(d["processed_image"]))).size == (28, 28)
    assert math.isclose(body["confidence"], math.prod(d["confidence"] for d in body["digits"]), rel_tol=1e-6)
    assert body["uncertain"] == any(d["uncertain"] for d in body["digits"])
    assert body["latency_ms"] > 0


def test_read_a_written_number_multipart(api):
    image = draw_number("2024")
    r = api.post(
        READ, files={"image": ("n.png", image, "image/png")}, data={"model": "cnn", "true_text": "2024"}
    )
    assert r.status_code == 200, r.text
    assert_reading(r.json(), "2024", image)
    assert r.json()["model"] == "cnn"


def test_read_json_base64_and_jpeg(api):
    buf = io.BytesIO()
    Image.open(io.BytesIO(draw_number("307"))).save(buf, format="JPEG", quality=80)
    r = api.post(READ, json={"image": base64.b64encode(buf.getvalue()).decode(), "model": "cnn"})
    assert r.status_code == 200, r.text
    assert_reading(r.json(), "307", buf.getvalue())


def test_one_digit_gives_a_one_digit_text(api, sample_png):
    r = api.post(READ, files={"image": ("d.png", sample_png, "image/png")}, data={"model": "cnn"})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "7" and len(r.json()["digits"]) == 1


def test_a_comma_is_not_read_as_a_digit(api):
    def comma(pen, size):
        pen.line([(1.3 * size, 1.35 * size), (1.25 * size, 1.5 * size)], fill="#1f2340", width=size // 10)

    r = api.post(READ, files={"image": ("n.png", draw_number("230", extra=comma), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "230"
    assert len(r.json()["dropped"]) == 1


@pytest.mark.parametrize("model", READY)
def test_every_ready_model_reads(api, model):
    r = api.post(READ, files={"image": ("n.png", draw_number("41"), "image/png")}, data={"model": model})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    assert len(r.json()["text"]) >= 1


def test_model_errors_match_predict(api, sample_png):
    files = {"image": ("d.png", sample_png, "image/png")}
    unknown = api.post(READ, files=files, data={"model": "nope"})
    assert_error(unknown, 404, "unknown_model")
    assert "'all'" not in unknown.text  # /read takes one model: 'all' is not offered
    assert "'all'" in api.post("/api/v1/predict", files=files, data={"model": "nope"}).text
    assert_error(api.post(READ, files=files, data={"model": TRAINING}), 503, "model_not_ready")
    assert_error(api.post(READ, files=files, data={"model": MISSING}), 503, "model_not_ready")
    assert_error(api.post(READ, files=files, data={"model": "all"}), 422, "invalid_fields")


@pytest.mark.parametrize("true_text", ["12a", "", " ", "1" * 33, "-5", "3.5", "20 24", "2024\n", " 7 "])
def test_true_text_is_digits_only(api, true_text):
    files = {"image": ("d.png", draw_digit(), "image/png")}
    r = api.post(READ, files=files, data={"true_text": true_text})
    if true_text.strip() == "":
        assert r.status_code == 200  # a blank form field means "not given", as on /predict
    elif true_text.strip().isdigit() and len(true_text.strip()) <= 32:
        assert r.status_code == 200  # surrounding whitespace dropped, as for /predict's true_digit ("7\n")
    else:
        assert_error(r, 422, "invalid_fields")


def test_a_reading_is_one_stored_record_with_feedback(store_server, admin):
    with store_server.client() as api:
        _reading_round_trip(api, admin)


def _reading_round_trip(api, admin) -> None:
    image = draw_number("307")
    r = api.post(
        READ, files={"image": ("n.png", image, "image/png")}, data={"model": "cnn", "session_id": "numbers-1"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["logged"] is True and isinstance(body["id"], int)
    number_id = body["id"]

    fb = api.post(f"/api/v1/numbers/{number_id}/feedback", json={"true_text": "307"})
    assert fb.status_code == 200, fb.text
    assert fb.json()["true_text"] == "307" and fb.json()["correct"] is (body["text"] == "307")

    page = api.get("/api/v1/numbers", params={"page_size": 5}, headers=admin)
    assert page.status_code == 200, page.text
    mine = [n for n in page.json()["items"] if n["id"] == number_id]
    assert mine and mine[0]["text"] == body["text"] and mine[0]["session_id"] == "numbers-1"
    assert [d["box"] for d in mine[0]["digits"]] == [d["box"] for d in body["digits"]]

    png = api.get(f"/api/v1/numbers/{number_id}/image", headers=admin)
    assert png.status_code == 200 and png.content == image

    # History's filters are the API's (the page filtered only the newest 500 in the browser)
    right = body["text"] == "307"
    def ids(**params):
        got = api.get("/api/v1/numbers", params={"page_size": 500, **params}, headers=admin)
        assert got.status_code == 200, got.text
        return {n["id"] for n in got.json()["items"]}, got.json()["total"]
    assert number_id in ids(model="cnn")[0] and number_id not in ids(model="svm")[0]
    assert ids(model="no-such-model") == (set(), 0)
    assert (number_id in ids(correct=str(right).lower())[0]) and number_id not in ids(correct=str(not right).lower())[0]
    assert number_id in ids(since="2000-01-01T00:00:00+01:00")[0] and number_id not in ids(until="2000-01-01")[0]
    assert_error(api.get("/api/v1/numbers", params={"since": "yesterday"}, headers=admin), 422, "invalid_fields")


def test_a_writing_that_is_no_number_can_be_said_so(store_server, admin):
    """Draw has "Not a digit"; a number's author could only type digits, so a smiley read as "467" could be
    confirmed as 467 (learning takes confirmed numbers' digits) or left unlabelled."""
    with store_server.client() as api:
        r = api.post(READ, files={"image": ("n.png", draw_number("42"), "image/png")}, data={"model": "cnn"})
        assert r.status_code == 200, r.text
        number_id = r.json()["id"]
        fb = api.post(f"/api/v1/numbers/{number_id}/feedback", json={"not_number": True})
        assert fb.status_code == 200, fb.text
        assert fb.json() | {"true_text": None, "not_number": True, "correct": False} == fb.json()
        listed = api.get("/api/v1/numbers", params={"page_size": 500}, headers=admin).json()["items"]
        (mine,) = [n for n in listed if n["id"] == number_id]
        assert (mine["true_text"], mine["not_number"], mine["correct"]) == (None, True, False)
        wrong = api.get("/api/v1/numbers", params={"page_size": 500, "correct": "false"}, headers=admin).json()
        assert number_id in {n["id"] for n in wrong["items"]}
        again = api.post(f"/api/v1/numbers/{number_id}/feedback", json={"true_text": "42"})  # changed their mind
        assert again.json()["not_number"] is False and again.json()["true_text"] == "42"
        for body in ({}, {"true_text": "42", "not_number": True}, {"not_number": False}, {"not_number": "yes"},
                     {"not_number": None}):  # fmt: skip
            assert_error(api.post(f"/api/v1/numbers/{number_id}/feedback", json=body), 422, "invalid_fields")
        # null is "not said" for both fields alike (`true_text: null` was taken, `not_number: null` a 422)
        said = api.post(f"/api/v1/numbers/{number_id}/feedback", json={"true_text": "42", "not_number": None})
        assert said.status_code == 200 and said.json()["not_number"] is False, said.text


def test_number_routes_errors(api, admin):
    assert_error(api.get("/api/v1/numbers"), 401, "unauthorized")
    assert_error(api.get("/api/v1/numbers/1/image"), 401, "unauthorized")
    assert_error(
        api.post("/api/v1/numbers/2147483647/feedback", json={"true_text": "1"}), 404, "number_not_found"
    )
    assert_error(api.get("/api/v1/numbers/2147483647/image", headers=admin), 404, "number_not_found")
    assert_error(api.post("/api/v1/numbers/1/feedback", json={"true_text": "1a"}), 422, "invalid_fields")
    assert_error(api.post("/api/v1/numbers/1/feedback", json={"true_text": 12}), 422, "invalid_fields")
    assert_error(
        api.get("/api/v1/numbers", params={"page_size": 100000}, headers=admin), 422, "invalid_fields"
    )


def test_noise_is_not_a_number(api):
    """Thousands of separate marks are no written number: refused before the work grows with them."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (280, 840), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")
    body = assert_error(api.post(READ, files={"image": ("n.png", buf.getvalue(), "image/png")}), 400, "not_a_number")
    assert "up to 32 digits side by side" in body["detail"]


def test_a_blank_image_asks_for_a_number(api):
    """/read of a blank image said "Draw a digit and try again" (the single-digit wording)."""
    buf = io.BytesIO()
    Image.new("RGB", (300, 100), "white").save(buf, format="PNG")
    body = assert_error(api.post(READ, files={"image": ("b.png", buf.getvalue(), "image/png")}), 400, "empty_image")
    assert "Write a number" in body["detail"] and "Draw a digit" not in body["detail"], body
