"""History, feedback, images, stats, export and deletion over a live server, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.api.schemas import drawing_key

from .conftest import assert_error, draw_digit


@pytest.fixture
def client(store_server):
    with store_server.client() as c:
        yield c


def predict(client, png: bytes, **data) -> dict:
    r = client.post("/api/v1/predict", files={"image": ("d.png", png, "image/png")}, data=data)
    assert r.status_code == 200, r.text
    return r.json()


def _scribble() -> bytes:
    """A dense zig-zag across the canvas: no digit (the detector flags it)."""
    im = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(im).line([(40 + 25 * i, 60 if i % 2 else 220) for i in range(9)], fill="black", width=14)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def test_prediction_is_logged_with_everything(client, admin):
    png = draw_digit()
    session = uuid.uuid4().hex
    p = predict(
        client,
        png,
        model="svm",
        true_digit="7",
        pen_color="#1f2340",
        background_color="#ffffff",
        session_id=session,
        source="ui",
    )
    assert p["logged"] is True and isinstance(p["id"], int)
    row = client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
    assert row["id"] == p["id"] and row["uid"] == p["uid"]
    assert row["model_name"] == "svm" and row["model_version"] == p["model_version"]
    assert row["predicted_digit"] == p["digit"] == 7
    assert row["drawn_digit"] == 7 and row["correct"] is True
    assert row["pen_color"] == "#1f2340" and row["background_color"] == "#ffffff"
    assert row["session_id"] == session and row["source"] == "ui"
    assert row["probabilities"] == pytest.approx(p["probabilities"])
    assert row["latency_ms"] == pytest.approx(p["latency_ms"])
    assert row["has_image"] and row["has_processed"]
    assert row["uncertain"] is p["uncertain"] is False  # the flag the answer carried (History shows it)
    scribble = predict(client, _scribble(), model="svm")
    assert scribble["uncertain"] is True
    assert client.get(f"/api/v1/predictions/{scribble['id']}", headers=admin).json()["uncertain"] is True
    stamp = datetime.fromisoformat(row["timestamp"])
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)

    original = client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin)
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == png  # PNG uploads are stored as sent
    processed = client.get(f"/api/v1/predictions/{p['id']}/image?kind=processed", headers=admin)
    assert processed.headers["content-type"] == "image/png"
    assert processed.content == base64.b64decode(p["processed_image"])
    assert Image.open(io.BytesIO(processed.content)).size == (28, 28)


def test_non_png_upload_is_stored_as_png(client, admin):
    p = predict(client, draw_digit(1000, fmt="JPEG"), model="svm")
    stored = client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin).content
    im = Image.open(io.BytesIO(stored))
    assert im.format == "PNG" and max(im.size) <= 512


def test_a_large_16_bit_png_is_stored_as_the_model_saw_it(client, admin):
    """Over 256 KB a PNG is stored re-encoded; a 16-bit grey one was clipped to all white (the 7 invisible)."""
    grey = np.asarray(Image.open(io.BytesIO(draw_digit(800))).convert("L"), np.float64)
    noisy = grey * 257 - np.random.default_rng(0).integers(0, 2000, grey.shape)  # incompressible: > 256 KB
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 65535).astype(np.uint16)).save(out, format="PNG")
    assert len(out.getvalue()) > 300_000
    p = predict(client, out.getvalue(), model="svm")
    stored = np.asarray(Image.open(io.BytesIO(client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin).content)).convert("L"))
    assert stored.min() < 80 and stored.mean() < 250  # the dark 7 on white, not white all over


def test_a_png_is_stored_without_its_payload(client, admin):
    """A drawing with 1 MB of text chunk and 1 MB of trailing bytes was stored as sent, once per model:
    the store keeps only the chunks of the picture (the same pixels)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 1_000_000)
    out = io.BytesIO()
    Image.open(io.BytesIO(draw_digit())).save(out, format="PNG", pnginfo=info)
    padded = out.getvalue() + b"\0" * 1_000_000
    p = predict(client, padded, model="svm")
    stored = client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin).content
    assert len(stored) < 50_000 < len(padded)
    assert Image.open(io.BytesIO(stored)).tobytes() == Image.open(io.BytesIO(padded)).tobytes()


def test_a_png_with_a_wrong_crc_is_refused_and_nothing_stored(client, admin):
    """PIL decodes a PNG whose IDAT CRC is wrong (libpng, and so most programs, refuse it): it was answered,
    sure, and stored re-encoded (sessions 27-35). A damaged file is refused as damaged, on /predict and /read,
    and nothing is stored; the same PNG with its CRC intact is read."""
    import struct

    sent = bytearray(draw_digit())
    pos = sent.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", sent[pos : pos + 4])
    sent[pos + 8 + length] ^= 0xFF  # the IDAT chunk's CRC
    before = client.get("/api/v1/predictions", headers=admin).json()["total"]
    for route in ("/api/v1/predict", "/api/v1/read"):
        r = client.post(route, files={"image": ("d.png", bytes(sent), "image/png")}, data={"model": "svm"})
        body = assert_error(r, 400, "unreadable_image")
        assert "IDAT" in body["detail"] and "checksum" in body["detail"], body
    assert client.get("/api/v1/predictions", headers=admin).json()["total"] == before
    predict(client, draw_digit(), model="svm")
    assert client.get("/api/v1/predictions", headers=admin).json()["total"] == before + 1


def test_a_large_png_is_stored_as_a_small_one(client, admin):
    """A 1200 px photo-like PNG (paper grain: megabytes) was stored whole, once per model: it is stored
    like a photo, at most 512 px."""
    from PIL import ImageDraw

    im = Image.new("L", (1200, 1200), 235)
    ImageDraw.Draw(im).line([(300, 250), (900, 250), (500, 1000)], fill=20, width=90)
    grain = np.random.default_rng(0).integers(-12, 13, (1200, 1200))
    im = Image.fromarray(np.clip(np.asarray(im, int) + grain, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    im.save(out, format="PNG")
    assert len(out.getvalue()) > 500_000
    p = predict(client, out.getvalue(), model="svm")
    stored = client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin).content
    assert max(Image.open(io.BytesIO(stored)).size) <= 512 and len(stored) < len(out.getvalue()) / 4


def test_default_source_is_api_and_source_filter_free(client, admin):
    p = predict(client, draw_digit())
    assert client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()["source"] == "api"


def test_feedback_sets_drawn_digit_and_correct(client, admin):
    p = predict(client, draw_digit(), model="svm")
    r = client.post(f"/api/v1/predictions/{p['id']}/feedback", json={"true_digit": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": p["id"],
        "uid": p["uid"],
        "true_digit": 1,
        "not_digit": False,
        "correct": False,
        "stored": "database",
        "queued": False,
    }
    row = client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
    assert row["drawn_digit"] == 1 and row["correct"] is False
    r = client.post(f"/api/v1/predictions/uid/{p['uid']}/feedback", json={"true_digit": 7})
    assert r.status_code == 200 and r.json()["stored"] == "database"
    assert (r.json()["id"], r.json()["correct"]) == (p["id"], p["digit"] == 7)  # the row's, as by id
    row = client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
    assert row["drawn_digit"] == 7 and row["correct"] is True


def test_feedback_unknown_prediction_is_404(client):
    assert_error(
        client.post("/api/v1/predictions/2000000000/feedback", json={"true_digit": 1}),
        404,
        "prediction_not_found",
    )
    assert_error(
        client.post(f"/api/v1/predictions/uid/{uuid.uuid4().hex}/feedback", json={"true_digit": 1}),
        404,
        "prediction_not_found",
    )


def test_history_pages_and_filters(client, admin):
    ids = [predict(client, draw_digit(), model=m)["id"] for m in ("svm", "svm_pca", "svm")]
    since = datetime.fromisoformat(
        client.get(f"/api/v1/predictions/{ids[0]}", headers=admin).json()["timestamp"]
    )
    page = client.get(
        "/api/v1/predictions", params={"page_size": 2, "since": since.isoformat()}, headers=admin
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 3 and body["page"] == 1 and body["page_size"] == 2
    assert [r["id"] for r in body["items"]] == [ids[2], ids[1]]  # newest first
    assert "image_png" not in body["items"][0]
    page2 = client.get(
        "/api/v1/predictions", params={"page": 2, "page_size": 2, "since": since.isoformat()}, headers=admin
    ).json()
    assert [r["id"] for r in page2["items"]] == [ids[0]]
    only_pca = client.get(
        "/api/v1/predictions", params={"model": "svm_pca", "since": since.isoformat()}, headers=admin
    ).json()
    assert [r["id"] for r in only_pca["items"]] == [ids[1]]
    client.post(f"/api/v1/predictions/{ids[0]}/feedback", json={"true_digit": 7})
    right = client.get(
        "/api/v1/predictions", params={"correct": "true", "since": since.isoformat()}, headers=admin
    ).json()
    assert ids[0] in [r["id"] for r in right["items"]]
    future = client.get("/api/v1/predictions", params={"since": "2999-01-01T00:00:00Z"}, headers=admin).json()
    assert future["total"] == 0 and future["items"] == []
    none = client.get("/api/v1/predictions", params={"until": "2000-01-01"}, headers=admin).json()
    assert none["total"] == 0


@pytest.mark.parametrize("path", ["/api/v1/predictions", "/api/v1/numbers"])
def test_a_filter_is_trimmed_and_a_blank_one_not_given(client, admin, path):
    """`?model=` was no filter, but `?model=%20svm%20` matched nothing and `?since=`, `?until=`, `?correct=` were
    422s (an API probe, session 46): each filter's text is trimmed, and blank is not given."""
    predict(client, draw_digit(), model="svm")
    everything = client.get(path, params={"page_size": 100}, headers=admin).json()
    blank = {"model": "", "since": " ", "until": "", "correct": ""}
    assert client.get(path, params={"page_size": 100, **blank}, headers=admin).json() == everything
    exact = client.get(path, params={"model": "svm"}, headers=admin).json()
    spaced = client.get(path, params={"model": " svm ", "correct": " false "}, headers=admin)
    assert spaced.status_code == 200, spaced.text
    assert client.get(path, params={"model": " svm "}, headers=admin).json() == exact


def test_stats_per_model(client):
    before = client.get("/api/v1/stats").json()
    p = predict(client, draw_digit(), model="svm_pca", true_digit="7")
    q = predict(client, draw_digit(), model="svm_pca")
    client.post(f"/api/v1/predictions/{q['id']}/feedback", json={"true_digit": 3})
    after = client.get("/api/v1/stats").json()
    assert set(after) == {"models", "total_predictions", "total_labelled"}
    old = before["models"].get("svm_pca", {"predictions": 0, "labelled": 0, "correct": 0})
    new = after["models"]["svm_pca"]
    assert new["predictions"] == old["predictions"] + 2
    assert new["labelled"] == old["labelled"] + 2
    assert new["correct"] == old["correct"] + (p["digit"] == 7) + (q["digit"] == 3)
    assert new["accuracy"] == pytest.approx(new["correct"] / new["labelled"])
    cm = new["confusion_matrix"]
    assert len(cm) == 10 and all(len(r) == 10 for r in cm)
    assert sum(map(sum, cm)) == new["labelled"]
    assert cm[3][q["digit"]] >= 1
    assert after["total_predictions"] == before["total_predictions"] + 2
    only = client.get("/api/v1/stats", params={"model": "svm_pca"}).json()
    assert set(only["models"]) == {"svm_pca"}


def _crossed_seven() -> bytes:
    """A European 7 (a bar across its stem) that no other test labels, so no conflicting label drops it."""
    im = Image.open(io.BytesIO(draw_digit()))
    ImageDraw.Draw(im).line([(112, 140), (190, 138)], fill="#1f2340", width=18)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def test_export_csv_has_labelled_drawings(client, admin):
    p = predict(client, _crossed_seven(), model="svm", true_digit="7")
    r = client.get("/api/v1/export.csv", headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers.get("content-disposition", "")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:2] == ["label", "pixel0"] and len(rows[0]) == 785
    assert len(rows) >= 2 and all(len(row) == 785 for row in rows[1:])
    processed = Image.open(io.BytesIO(base64.b64decode(p["processed_image"])))
    pixels = [str(v) for v in processed.tobytes()]
    assert ["7", *pixels] in rows[1:]
    head = client.head("/api/v1/export.csv", headers=admin)  # the headers only, without the export's work
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/csv") and "attachment" in head.headers["content-disposition"]
    assert head.headers.get("content-length") in (None, r.headers.get("content-length"))  # (it said 0: a probe)


def test_delete_prediction(client, admin):
    p = predict(client, draw_digit())
    assert client.delete(f"/api/v1/predictions/{p['id']}", headers=admin).status_code == 204
    assert_error(client.get(f"/api/v1/predictions/{p['id']}", headers=admin), 404, "prediction_not_found")
    assert_error(
        client.get(f"/api/v1/predictions/{p['id']}/image", headers=admin), 404, "prediction_not_found"
    )
    assert_error(client.delete(f"/api/v1/predictions/{p['id']}", headers=admin), 404, "prediction_not_found")
    assert_error(
        client.post(f"/api/v1/predictions/{p['id']}/feedback", json={"true_digit": 1}),
        404,
        "prediction_not_found",
    )


def test_model_all_logs_one_record_per_model(client, admin):
    r = client.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"model": "all"}).json()
    for p in r["predictions"]:
        row = client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
        assert row["model_name"] == p["model"]


def test_row_without_images_answers_image_not_found(store_server, client, admin, tmp_path):
    """Rows written by the original app have no images: the row exists, its image does not."""
    from digitlab.store import PredictionRecord, PredictionStore

    store = PredictionStore(store_server.env["DATABASE_URL"], tmp_path / "spool").start()
    try:
        result = store.add(PredictionRecord(model_name="svm", predicted_digit=3, probabilities=[0.1] * 10))
    finally:
        store.close()
    assert result.id is not None
    assert client.get(f"/api/v1/predictions/{result.id}", headers=admin).json()["has_image"] is False
    for kind in ("input", "processed"):
        r = client.get(f"/api/v1/predictions/{result.id}/image", params={"kind": kind}, headers=admin)
        assert_error(r, 404, "image_not_found")


def _metric(client, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )  # fmt: skip


def test_one_drawing_is_one_record_however_many_strokes(client, admin):
    drawing = uuid.uuid4().hex
    before = _metric(client, "digitlab_predictions_total", model="svm")
    first = predict(client, draw_digit(), model="svm", drawing_id=drawing, source="ui")
    second = predict(client, draw_digit(pen="#aa0000"), model="svm", drawing_id=drawing, source="ui")
    assert second["id"] == first["id"]
    row = client.get(f"/api/v1/predictions/{first['id']}", headers=admin).json()
    key = drawing_key(None, drawing)  # (the stored key, made as a session's is)
    assert row["drawing_id"] == key and row["uid"] == second["uid"] and row["pen_color"] is None
    items = client.get("/api/v1/predictions", params={"model": "svm", "page_size": 500}, headers=admin).json()["items"]
    assert [i["id"] for i in items].count(first["id"]) == 1 and sum(i["drawing_id"] == key for i in items) == 1
    assert _metric(client, "digitlab_predictions_total", model="svm") == before + 1
    assert _metric(client, "digitlab_drawing_updates_total", model="svm") >= 1
    r = client.post(f"/api/v1/predictions/uid/{second['uid']}/feedback", json={"true_digit": 7})
    assert r.status_code == 200
    row = client.get(f"/api/v1/predictions/{first['id']}", headers=admin).json()
    assert (row["drawn_digit"], row["correct"]) == (7, row["predicted_digit"] == 7)


def test_a_drawings_picture_is_not_kept_by_caches_as_it_changes(client, admin):
    """The picture under one URL changes with each live stroke of a drawing: it was sent `max-age=3600` with no
    ETag, and a browser kept the first stroke's picture for an hour (an API probe, session 32)."""
    drawing = uuid.uuid4().hex
    first = predict(client, draw_digit(), model="svm", drawing_id=drawing, source="ui")
    url = f"/api/v1/predictions/{first['id']}/image"
    before = client.get(url, headers=admin)
    predict(client, draw_digit(pen="#aa0000"), model="svm", drawing_id=drawing, source="ui")
    after = client.get(url, headers=admin)
    assert before.content != after.content
    for answer in (before, after):
        assert "no-cache" in answer.headers["cache-control"] and "max-age" not in answer.headers["cache-control"]
    assert before.headers["etag"] != after.headers["etag"]
    # and the ETag saves the download when the picture did not change (it was ignored: a probe, session 33)
    same = client.get(url, headers={**admin, "If-None-Match": after.headers["etag"]})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == after.headers["etag"]
    assert client.get(url, headers={**admin, "If-None-Match": before.headers["etag"]}).content == after.content
    read = client.post("/api/v1/read", files={"image": ("n.png", draw_digit(), "image/png")}, data={"model": "svm"})
    number_url = f"/api/v1/numbers/{read.json()['id']}/image"
    tag = client.get(number_url, headers=admin).headers["etag"]
    assert client.get(number_url, headers={**admin, "If-None-Match": f"W/{tag}, \"x\""}).status_code == 304


def test_a_drawing_id_belongs_to_its_session(client, admin):
    """Another session sending the same drawing id gets a record of its own: it replaced the first one's
    picture under that one's label (a picture of a 1 "labelled 7" for learning), on /predict and /read."""
    drawing = "drawing-1"  # what two clients numbering their drawings would both send
    alice = predict(client, draw_digit(), model="svm", drawing_id=drawing, session_id="alice", true_digit=7)
    mallory = predict(client, draw_digit(pen="#aa0000"), model="svm", drawing_id=drawing, session_id="mallory")
    assert mallory["id"] != alice["id"]
    row = client.get(f"/api/v1/predictions/{alice['id']}", headers=admin).json()
    assert (row["uid"], row["session_id"], row["drawn_digit"]) == (alice["uid"], "alice", 7)
    again = predict(client, draw_digit(), model="svm", drawing_id=drawing, session_id="alice")  # alice's next stroke
    assert again["id"] == alice["id"]
    numbers = []
    for session in ("alice", "mallory"):
        r = client.post("/api/v1/read", files={"image": ("n.png", draw_digit(), "image/png")},
                        data={"drawing_id": drawing, "session_id": session, "model": "svm"})  # fmt: skip
        assert r.status_code == 200, r.text
        numbers.append(r.json()["id"])
    assert numbers[0] != numbers[1]
    # the stored key of alice's drawing, sent without a session, is not alice's drawing
    stolen = predict(client, draw_digit(pen="#aa0000"), model="svm", drawing_id=row["drawing_id"])
    assert stolen["id"] != alice["id"]
    row = client.get(f"/api/v1/predictions/{alice['id']}", headers=admin).json()
    assert (row["uid"], row["session_id"], row["drawn_digit"]) == (again["uid"], "alice", 7)


def test_not_a_digit_is_an_answer(client, admin):
    p = predict(client, draw_digit(), model="svm")
    labelled_before = client.get("/api/v1/stats").json()["models"]["svm"]["labelled"]
    r = client.post(f"/api/v1/predictions/{p['id']}/feedback", json={"not_digit": True})
    assert r.status_code == 200, r.text
    assert (r.json()["not_digit"], r.json()["true_digit"], r.json()["correct"]) == (True, None, None)
    row = client.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
    assert (row["not_digit"], row["drawn_digit"], row["correct"]) == (True, None, None)
    assert client.get("/api/v1/stats").json()["models"]["svm"]["labelled"] == labelled_before
    for body in ({}, {"true_digit": 3, "not_digit": True}, {"not_digit": False}, {"not_digit": None}):
        assert_error(client.post(f"/api/v1/predictions/{p['id']}/feedback", json=body), 422, "invalid_fields")
    # null is "not said" for both fields alike (`true_digit: null` was taken, `not_digit: null` a 422)
    r = client.post(f"/api/v1/predictions/{p['id']}/feedback", json={"true_digit": 4, "not_digit": None})
    assert r.status_code == 200 and (r.json()["true_digit"], r.json()["not_digit"]) == (4, False), r.text


def test_drawing_id_is_checked(client):
    r = client.post("/api/v1/predict", files={"image": ("d.png", draw_digit(), "image/png")},
                    data={"drawing_id": "../../etc/passwd"})  # fmt: skip
    assert_error(r, 422, "invalid_fields")


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_not_digit_must_be_a_json_boolean(client, value):
    """Like `true_digit`, strict: "yes" or 1 are not read as true (the answer would be stored as not a digit)."""
    p = predict(client, draw_digit())
    r = client.post(f"/api/v1/predictions/{p['id']}/feedback", json={"not_digit": value})
    assert_error(r, 422, "invalid_fields")


def test_health_answers_head_for_load_balancer_probes(client):
    r = client.head("/health")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("value", ["10", "-1"])
def test_a_form_digit_out_of_range_is_said_to_be_out_of_range(client, value):
    """Multipart `true_digit=10`: the message names the range, not "should be a valid integer"."""
    r = client.post("/api/v1/predict", files={"image": ("d.png", draw_digit(), "image/png")}, data={"true_digit": value})
    body = assert_error(r, 422, "invalid_fields")
    assert "true_digit" in body["detail"] and ("9" in body["detail"] or "0" in body["detail"]), body
    assert "valid integer" not in body["detail"]


def test_a_json_body_with_a_byte_order_mark_is_read(client):
    """RFC 8259 lets a parser ignore a UTF-8 BOM (Windows tools write one); the image is read as usual."""
    import json

    body = b"\xef\xbb\xbf" + json.dumps({"image": base64.b64encode(draw_digit()).decode()}).encode()
    r = client.post("/api/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and 0 <= r.json()["digit"] <= 9


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_every_route_reads_json_in_the_same_encodings(client, admin, encoding):
    """The feedback routes (FastAPI's parser) read UTF-16 and UTF-32 JSON and a UTF-8 byte order mark, as RFC 8259's
    detection does, while `/predict` and `/read` refused UTF-16 as "not valid JSON" and `/learn` even the byte order
    mark (a probe, session 30): one rule for every route."""
    import json

    def send(path: str, payload: dict, **headers: str):
        body = json.dumps(payload).encode(encoding)
        return client.post(path, content=body, headers={"content-type": "application/json", **headers})

    image = base64.b64encode(draw_digit()).decode()
    p = send("/api/v1/predict", {"image": image, "model": "svm"})
    assert p.status_code == 200 and 0 <= p.json()["digit"] <= 9, p.text
    read = send("/api/v1/read", {"image": image})
    assert read.status_code == 200 and read.json()["text"], read.text
    fb = send(f"/api/v1/predictions/{p.json()['id']}/feedback", {"true_digit": 7})
    assert fb.status_code == 200 and fb.json()["true_digit"] == 7, fb.text
    learn = send("/api/v1/learn", {"models": ["nope"]}, **admin)  # read, and refused for what it says
    body = assert_error(learn, 422, "invalid_fields")
    assert "not valid JSON" not in body["detail"] and "models" in body["detail"], body


def test_json_and_form_read_the_same_fields_alike(client, admin):
    """A form's fields were read without their spaces and JSON's with them: `"s1 "` in JSON was another session
    than the form's `s1 ` (two records for one drawing), `" svm"` an unknown model, `" #ffffff "` invalid; and
    `"source": null` was a 422 where every other optional field's null is "not given" (an API probe, session 32)."""
    session, drawing = f"s{uuid.uuid4().hex[:8]} ", uuid.uuid4().hex
    image = base64.b64encode(draw_digit()).decode()
    by_json = client.post("/api/v1/predict", json={"image": image, "model": " svm", "session_id": session,
                                                   "drawing_id": drawing, "pen_color": " #000000 ",
                                                   "source": None})  # fmt: skip
    assert by_json.status_code == 200, by_json.text
    by_form = predict(client, draw_digit(pen="#aa0000"), model="svm", session_id=session.strip(), drawing_id=drawing)
    assert by_form["id"] == by_json.json()["id"]  # one drawing, one record
    row = client.get(f"/api/v1/predictions/{by_form['id']}", headers=admin).json()
    assert row["session_id"] == session.strip() and row["source"] == "api"
    read = client.post("/api/v1/read", json={"image": image, "source": None, "model": "svm "})
    assert read.status_code == 200, read.text


def test_a_blank_session_is_no_session_in_json_as_in_a_form(client, admin):
    """JSON's `"session_id": ""` (or spaces) was stored as the session '' where a form's empty field is none: learning
    counted them as two sessions (an API probe, session 33)."""
    image = base64.b64encode(draw_digit()).decode()
    ids = []
    for blank in ("", "   "):
        answer = client.post("/api/v1/predict", json={"image": image, "model": "svm", "session_id": blank})
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    ids.append(predict(client, draw_digit(), model="svm", session_id="")["id"])
    for id_ in ids:
        assert client.get(f"/api/v1/predictions/{id_}", headers=admin).json()["session_id"] is None


def _refusing(url: str, prefix: str, create: bool) -> None:
    """A database that answers but will not take the rows of sessions starting with `prefix` (a trigger here; a
    constraint, a grant or schema drift alike); `create=False` takes the triggers away again."""
    from digitlab.store.db import make_engine

    engine = make_engine(url)
    tag, n, tables = prefix.rstrip("-"), len(prefix), ("user_predictions", "read_numbers")
    if engine.dialect.name == "postgresql":
        refuse = (
            f"CREATE FUNCTION {tag}() RETURNS trigger AS $$ BEGIN IF left(NEW.session_id, {n}) = '{prefix}' "
            "THEN RAISE EXCEPTION 'refused by policy'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        create_each = "CREATE TRIGGER {tag}_{t} BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {tag}()"
        statements = [refuse] + [create_each.format(tag=tag, t=t) for t in tables] if create else (
            [f"DROP TRIGGER {tag}_{t} ON {t}" for t in tables] + [f"DROP FUNCTION {tag}()"])  # fmt: skip
    else:
        create_each = (
            "CREATE TRIGGER {tag}_{t} BEFORE INSERT ON {t} WHEN substr(NEW.session_id, 1, {n}) = '{prefix}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
        )
        statements = [create_each.format(tag=tag, t=t, n=n, prefix=prefix) for t in tables] if create else (
            [f"DROP TRIGGER {tag}_{t}" for t in tables])  # fmt: skip
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _failures(client) -> float:
    text = client.get("/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("digitlab_store_write_failures_total"))


def test_a_drawing_the_database_refuses_is_answered_not_logged(store_server, client, admin):
    """A prediction the database refused (not an outage) was answered `logged: true`, then set aside in rejected.jsonl
    by the replay: /health said `ok`, the failures counter stayed 0 and a label by its uid was a 404 later (an API
    probe). Now the answer says `logged: false` at once, the counter counts it, /health says `failing`, the label is
    refused with a reason; a `/read` alike. A drawing written next is stored, and /health says `ok` again."""
    prefix = f"rej{uuid.uuid4().hex[:8]}-"
    url = store_server.env["DATABASE_URL"]
    _refusing(url, prefix, create=True)
    try:
        before = _failures(client)
        answer = predict(client, draw_digit(), session_id=prefix + "a")
        assert answer["logged"] is False and answer["id"] is None
        assert client.get("/health").json()["database"] == "failing"
        assert _failures(client) == before + 1
        assert_error(client.post(f"/api/v1/predictions/uid/{answer['uid']}/feedback", json={"true_digit": 3}),
                     404, "prediction_not_found")  # fmt: skip
        read = client.post("/api/v1/read", files={"image": ("n.png", draw_digit(), "image/png")},
                           data={"session_id": prefix + "b"})  # fmt: skip
        assert read.status_code == 200 and read.json()["logged"] is False and read.json()["id"] is None
        assert _failures(client) == before + 2
    finally:
        _refusing(url, prefix, create=False)
    stored = predict(client, draw_digit(), session_id=prefix + "c")
    assert stored["logged"] is True and stored["id"] is not None
    health = client.get("/health").json()
    assert health["database"] == "ok" and health["spool"] == 0, health


def test_json_reads_the_source_without_its_spaces_as_a_form_does(client, admin):
    """JSON's `"source": "upload "` was a 422 where the form's `source= upload ` was read (every other text field
    is trimmed in both: an API probe); blank is "not given", as for the model."""
    image = base64.b64encode(draw_digit()).decode()
    for sent, stored in (("upload ", "upload"), (" ui", "ui"), ("  ", "api")):
        answer = client.post("/api/v1/predict", json={"image": image, "model": "svm", "source": sent})
        assert answer.status_code == 200, answer.text
        assert client.get(f"/api/v1/predictions/{answer.json()['id']}", headers=admin).json()["source"] == stored
    assert client.post("/api/v1/read", json={"image": image, "source": " upload"}).status_code == 200
    assert_error(client.post("/api/v1/predict", json={"image": image, "source": "phone"}), 422, "invalid_fields")


def test_a_time_offsets_plus_sent_unencoded_is_read_as_a_plus(client, admin):
    """`since=2026-01-01T09:00:00+05:00` typed into a URL arrives with a space for the "+" (a query's plus is a
    space): it was a 422 "unexpected extra characters", with no hint why (an API probe). It is the offset meant."""
    predict(client, draw_digit())
    encoded = client.get("/api/v1/predictions", params={"since": "2000-01-01T09:00:00+05:00"}, headers=admin)
    typed = client.get("/api/v1/predictions?since=2000-01-01T09:00:00+05:00", headers=admin)
    assert typed.status_code == 200, typed.text
    assert typed.json()["total"] == encoded.json()["total"] > 0
    later = client.get("/api/v1/numbers?since=2999-01-01T09:00+0530", headers=admin)
    assert later.status_code == 200 and later.json()["total"] == 0, later.text
    assert_error(client.get("/api/v1/predictions?since=2000-01-01T09:00:00+5", headers=admin), 422, "invalid_fields")
    for offset in ("+99:00", "-24:00", "+0560"):  # (it said "unexpected extra characters")
        r = client.get("/api/v1/predictions", params={"since": f"2000-01-01T09:00:00{offset}"}, headers=admin)
        assert_error(r, 422, "invalid_fields")
        assert f"offset {offset}" in r.json()["detail"] and "between -23:59 and +23:59" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    ("since", "said"),
    [
        ("2026-12-05T24:00:00", "has the time 24:00:00: hours run from 00 to 23"),
        ("2026-12-05T10:61", "has the time 10:61: hours run from 00 to 23, minutes and seconds from 00 to 59"),
        ("2026-12-05T10:00:00+05:30:30", "has '+05:30:30' after the time 10:00:00: a time zone is Z or an offset"),
        ("2026-12-05T10:00:00 UTC", "has 'UTC' after the time 10:00:00"),
    ],
)
def test_a_time_out_of_its_range_or_with_a_strange_zone_is_named(client, admin, since, said):
    """Each was "unexpected extra characters at the end of the input" (pydantic, failing the time, reads the value
    as a date; an API probe, session 46). What a time may be is still taken: see the test above."""
    r = client.get("/api/v1/predictions", params={"since": since}, headers=admin)
    assert_error(r, 422, "invalid_fields")
    assert said in r.json()["detail"] and "extra characters" not in r.json()["detail"], r.text


def test_a_blank_image_kind_is_the_drawing_as_submitted(client, admin):
    """`?kind=` was a 422 where every other blank filter is not given (an API probe, session 46)."""
    p = predict(client, draw_digit())
    given = client.get(f"/api/v1/predictions/{p['id']}/image", params={"kind": "input"}, headers=admin)
    for blank in ("", " "):
        r = client.get(f"/api/v1/predictions/{p['id']}/image", params={"kind": blank}, headers=admin)
        assert r.status_code == 200 and r.content == given.content, r.text
    assert client.get(f"/api/v1/predictions/{p['id']}/image", params={"kind": " processed "}, headers=admin).content[:4] == b"\x89PNG"
