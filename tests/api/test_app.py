"""In-process tests of the app's own machinery (TestClient): what is awkward to provoke in a live server."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import warnings
from concurrent.futures import Future
from pathlib import Path

import pytest

from digitlab.api.errors import describe_validation_errors
from digitlab.api.limits import BodyLimitMiddleware
from digitlab.api.main import create_app
from digitlab.api.upkeep import refresh_models
from digitlab.core.config import Settings
from digitlab.preprocess import sniff_format

from .conftest import assert_error, draw_digit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def run_in_fresh_loop(coro):
    """`asyncio.run` in this (the main) thread even when the browser tests' Playwright (sync API) left its
    event loop marked as running here, so these tests pass in any order. The main thread matters: OpenBLAS
    applies thread limits only from it."""
    left_over = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        return asyncio.run(coro)
    finally:
        asyncio._set_running_loop(left_over)


def settings_for(tmp_path, model_dir, **kw) -> Settings:
    return Settings(
        _env_file=None,
        model_dir=model_dir,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{(tmp_path / 'app.db').as_posix()}",
        **kw,
    )


@pytest.fixture
def png() -> bytes:
    return draw_digit()


def test_without_admin_token_history_is_open(tmp_path, served_model_dir, png):
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        p = c.post("/api/v1/predict", files={"image": ("d.png", png)}).json()
        assert c.get("/api/v1/predictions").json()["total"] == 1
        assert c.get(f"/api/v1/predictions/{p['id']}/image?kind=processed").status_code == 200
        assert c.get("/api/v1/export.csv").status_code == 200
        assert c.delete(f"/api/v1/predictions/{p['id']}").status_code == 204


def test_a_reading_the_store_refuses_is_counted_and_health_says_failing(tmp_path, served_model_dir):
    """A `/read` the store could not take (SQLite on a full disk lost 343 of 400 readings while /health said "ok"
    and no metric moved: a probe, session 34) counts like a prediction: the metric, and /health "failing"
    until a reading is stored again."""
    from drawn_numbers import draw_number

    app = create_app(settings_for(tmp_path, served_model_dir))
    image = draw_number("42")
    with TestClient(app) as c:
        store = app.state.ctx.store

        def broken(record):
            raise OSError("No space left on device")

        store.add_number = broken
        try:
            r = c.post("/api/v1/read", files={"image": ("n.png", image)})
            assert r.status_code == 200 and r.json()["logged"] is False and r.json()["text"] == "42"
            assert "digitlab_store_write_failures_total 1.0" in c.get("/metrics").text
            health = c.get("/health").json()
            assert (health["status"], health["database"]) == ("degraded", "failing")
        finally:
            del store.add_number
        assert c.post("/api/v1/read", files={"image": ("n.png", image)}).json()["logged"] is True
        assert c.get("/health").json()["database"] == "ok"


def test_store_failure_still_answers(tmp_path, served_model_dir, png):
    """A store that takes no rows (a full disk): the answer comes, `logged: false`, and /health says the
    database is failing (it said "ok" while every answer was unlogged); a write that works clears it."""
    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app) as c:
        store = app.state.ctx.store

        def broken(records):
            raise RuntimeError("disk on fire")

        store.add_many_async = broken
        try:
            r = c.post("/api/v1/predict", files={"image": ("d.png", png)})
            assert r.status_code == 200
            assert r.json()["logged"] is False and r.json()["id"] is None and r.json()["digit"] == 7
            # a label for it is refused at once: during an outage the spool took it ("queued") and then
            # dropped it, as no record with that uid ever arrives
            store.set_feedback_by_uid = lambda uid, digit: True  # what a spooling store answers
            try:
                answer = c.post(f"/api/v1/predictions/uid/{r.json()['uid']}/feedback", json={"true_digit": 7})
            finally:
                del store.set_feedback_by_uid
            assert_error(answer, 404, "prediction_not_found")
            assert "not stored" in answer.json()["detail"]
            metrics = c.get("/metrics").text
            assert "digitlab_store_write_failures_total 1.0" in metrics
            health = c.get("/health").json()
            assert (health["status"], health["database"]) == ("degraded", "failing")
        finally:
            del store.add_many_async

        def spooled(records):  # a write that only reached the spool tells nothing about the database
            from types import SimpleNamespace

            future = Future()
            future.set_result([SimpleNamespace(id=None, uid=r.uid, stored="spool") for r in records])
            return future

        store.add_many_async = spooled
        try:
            assert c.post("/api/v1/predict", files={"image": ("d.png", png)}).json()["logged"] is True
            assert c.get("/health").json()["database"] == "failing"  # said "ok" (SQLite on a full disk)
        finally:
            del store.add_many_async
        assert c.post("/api/v1/predict", files={"image": ("d.png", png)}).json()["logged"] is True
        assert c.get("/health").json()["database"] == "ok"


def test_store_that_cannot_open_degrades(tmp_path, served_model_dir, png, monkeypatch):
    from digitlab.api import main

    def boom(settings):
        raise PermissionError("spool folder is read-only")

    monkeypatch.setattr(main, "_open_store", boom)
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        health = c.get("/health").json()
        assert health["status"] == "degraded" and health["database"] == "unavailable"
        r = c.post("/api/v1/predict", files={"image": ("d.png", png)})
        assert r.status_code == 200 and r.json()["logged"] is False
        assert_error(c.get("/api/v1/predictions"), 503, "database_unavailable")
        assert_error(
            c.post("/api/v1/predictions/1/feedback", json={"true_digit": 1}), 503, "database_unavailable"
        )


def test_an_outage_logs_a_line_per_ten_seconds_not_per_503(tmp_path, served_model_dir, monkeypatch, caplog):
    """Every 503 was a WARNING line: 1,525 in a 17 s outage under load. Now one per code per 10 s, and the next
    one says how many were answered meanwhile (the metrics count each)."""
    from digitlab.api import errors, main

    def boom(settings):
        raise PermissionError("spool folder is read-only")

    now = [1000.0]
    monkeypatch.setattr(main, "_open_store", boom)
    monkeypatch.setattr(errors, "_clock", lambda: now[0])
    with caplog.at_level(logging.WARNING, "digitlab.api"), TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        for _ in range(30):
            assert_error(c.get("/api/v1/predictions"), 503, "database_unavailable")
            now[0] += 0.5  # 30 answers in 15 s
        lines = [r.getMessage() for r in caplog.records if "database_unavailable" in r.getMessage()]
        assert len(lines) == 2, lines
        assert lines[0].startswith("GET /api/v1/predictions -> 503 database_unavailable"), lines
        assert "(19 more database_unavailable answered in the last 10 s)" in lines[1], lines


def test_no_model_ready(tmp_path, png, monkeypatch):
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setattr("digitlab.models.registry.BUNDLED_DIR", empty)  # as if the CNN were not shipped
    with TestClient(create_app(settings_for(tmp_path, empty))) as c:
        health = c.get("/health").json()
        assert health["models"]["cnn"] == "missing"
        assert health["status"] == "degraded"
        assert_error(c.post("/api/v1/predict", files={"image": ("d.png", png)}), 503, "model_not_ready")
        assert_error(
            c.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "all"}),
            503,
            "model_not_ready",
        )


def test_new_model_files_are_picked_up(tmp_path, tiny_model_dir, png):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    app = create_app(settings_for(tmp_path, model_dir))
    with TestClient(app) as c:
        ctx = app.state.ctx
        assert c.get("/health").json()["models"]["svm_pca"] == "missing"
        (model_dir / "svm_pca.training").touch()
        refresh_models(ctx)
        assert c.get("/health").json()["models"]["svm_pca"] == "training"
        shutil.copy2(tiny_model_dir / "svm_pca.joblib", model_dir / "svm_pca.joblib")
        shutil.copy2(tiny_model_dir / "svm_pca.json", model_dir / "svm_pca.json")
        refresh_models(ctx)
        assert c.get("/health").json()["models"]["svm_pca"] == "training"  # still marked: wait
        (model_dir / "svm_pca.training").unlink()
        refresh_models(ctx)
        assert c.get("/health").json()["models"]["svm_pca"] == "ready"
        r = c.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "svm_pca"})
        assert r.status_code == 200 and r.json()["model"] == "svm_pca"


def _svm_only(tmp_path, tiny_model_dir):
    """A model folder holding the tiny svm's files only."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    for suffix in ("json", "joblib"):
        shutil.copy2(tiny_model_dir / f"svm.{suffix}", model_dir / f"svm.{suffix}")
    return model_dir


def test_a_broken_artefact_written_over_a_served_one_is_said(tmp_path, tiny_model_dir, png):
    """The log said "model svm not loaded", `/models` said ready with no error, and the next start found svm
    broken (a probe, session 27). The version loaded before is still served, and `/models` says why."""
    import json
    import time

    model_dir = _svm_only(tmp_path, tiny_model_dir)
    with TestClient(create_app(settings_for(tmp_path, model_dir))) as c:
        ctx = c.app.state.ctx
        (model_dir / "svm.joblib").write_bytes(b"not a model")
        manifest = json.loads((model_dir / "svm.json").read_text())
        manifest["trained_at"] = "2026-12-01T08:00:00Z"
        time.sleep(0.01)
        (model_dir / "svm.json").write_text(json.dumps(manifest))
        refresh_models(ctx)
        svm = next(m for m in c.get("/api/v1/models").json() if m["name"] == "svm")
        assert svm["status"] == "ready" and "SHA-256" in svm["error"] and "is served until it is fixed" in svm["error"]
        r = c.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "svm"})
        assert r.status_code == 200 and r.json()["model"] == "svm"


def test_tampered_artefact_is_not_loaded(tmp_path, tiny_model_dir, png):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    shutil.copy2(tiny_model_dir / "svm.json", model_dir / "svm.json")
    (model_dir / "svm.joblib").write_bytes((tiny_model_dir / "svm.joblib").read_bytes() + b"evil")
    with TestClient(create_app(settings_for(tmp_path, model_dir))) as c:
        svm = next(m for m in c.get("/api/v1/models").json() if m["name"] == "svm")
        assert svm["status"] == "missing" and "SHA-256" in svm["error"]
        assert str(tmp_path) not in svm["error"] and "svm.joblib" in svm["error"], svm["error"]  # (a public list)
        body = assert_error(
            c.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "svm"}),
            503,
            "model_not_ready",
        )
        assert "digitlab train svm" in body["detail"]


def test_default_model_setting(tmp_path, served_model_dir, png):
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, default_model="svm_pca"))) as c:
        assert c.post("/api/v1/predict", files={"image": ("d.png", png)}).json()["model"] == "svm_pca"
        defaults = [m["name"] for m in c.get("/api/v1/models").json() if m["default"]]
        assert defaults == ["svm_pca"]


def test_a_default_model_that_is_not_ready_is_warned_about(tmp_path, tiny_model_dir, caplog):
    """DIGITLAB_DEFAULT_MODEL names a model that is not trained: the log says which model answers instead."""
    model_dir = tmp_path / "models"
    shutil.copytree(tiny_model_dir, model_dir)
    for path in model_dir.glob("svm.*"):
        path.unlink()
    settings = settings_for(tmp_path, model_dir, default_model="svm")
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as c:
        default = next(m["name"] for m in c.get("/api/v1/models").json() if m["default"])
    said = [r.getMessage() for r in caplog.records if "DIGITLAB_DEFAULT_MODEL" in r.getMessage()]
    assert said == [f"DIGITLAB_DEFAULT_MODEL=svm is missing: requests that name no model get {default}"]
    assert default != "svm"


def test_unexpected_exception_is_a_json_500(tmp_path, served_model_dir):
    app = create_app(settings_for(tmp_path, served_model_dir))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        body = assert_error(c.get("/boom"), 500, "internal_error")
        assert "secret" not in body["detail"]


def test_two_apps_in_one_process_have_their_own_metrics(tmp_path, served_model_dir, png):
    a = create_app(settings_for(tmp_path / "a", served_model_dir))
    b = create_app(settings_for(tmp_path / "b", served_model_dir))
    with TestClient(a) as ca, TestClient(b) as cb:
        ca.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "svm"})
        line = 'digitlab_predictions_total{digit="7",model="svm"}'
        assert line + " 1.0" in ca.get("/metrics").text
        assert line not in cb.get("/metrics").text


def test_small_body_limit_is_configurable(tmp_path, served_model_dir, png):
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, max_upload_bytes=1000))) as c:
        assert_error(c.post("/api/v1/predict", files={"image": ("d.png", png)}), 413, "payload_too_large")
        assert c.get("/health").status_code == 200


def test_validation_sentence_names_fields_not_values():
    text = describe_validation_errors(
        [
            {
                "loc": ("query", "page"),
                "msg": "Input should be greater than or equal to 1",
                "type": "greater_than_equal",
                "input": "SECRET",
            },
            {"loc": ("body", "true_digit"), "msg": "Field required", "type": "missing"},
        ]
    )
    assert (
        text
        == "Invalid request: 'page': input should be greater than or equal to 1; 'true_digit' is required."
    )
    assert "SECRET" not in text


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
        (b"BM" + b"\0" * 30, "bmp"),
    ],
)
def test_sniff_by_magic_bytes(head, kind):
    assert sniff_format(head + b"\0" * 16) == kind


def _limited(receive, headers, *, max_bytes=1000, drain_bytes=3000) -> list[dict]:
    """Run BodyLimitMiddleware over one POST; the app behind it must not be reached. Returns what it sent."""
    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not be called")

    mw = BodyLimitMiddleware(app, max_bytes=max_bytes, drain_bytes=drain_bytes)
    run_in_fresh_loop(mw({"type": "http", "method": "POST", "headers": headers}, receive, send))
    assert sent[0]["status"] == 413 and b'"payload_too_large"' in sent[1]["body"]
    return sent


def _endless_reader(reads: list[int], chunk: int = 400):
    async def receive():
        reads.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    return receive


def test_body_limit_counts_chunked_bodies():
    """A body without Content-Length is refused once the count passes the limit; the rest is read (so the
    client, still sending, can read the 413) only up to the drain bound."""
    reads: list[int] = []
    _limited(_endless_reader(reads), [])
    assert sum(reads) == 3200  # the first read past drain_bytes=3000, not one more


def test_body_limit_drains_a_declared_body_before_answering():
    """No `Expect: 100-continue` (urllib): the client sends everything before it reads; read it all first."""
    parts = [b"x" * 2000, b"x" * 500]

    async def receive():
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    _limited(receive, [(b"content-length", b"2500")])
    assert parts == []


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"2500"), (b"expect", b"100-continue")],  # body not sent until asked for
        [(b"content-length", b"5000")],  # beyond the drain bound: not worth reading
    ],
    ids=["expect-100-continue", "beyond-drain-bound"],
)
def test_body_limit_refuses_declared_length_without_reading(headers):
    async def receive():
        raise AssertionError("the body must not be read")

    _limited(receive, headers)


def test_serve_refuses_bad_arguments():
    from digitlab.api.server import serve
    from digitlab.errors import DigitlabError

    with pytest.raises(DigitlabError):
        serve(port=70000)
    with pytest.raises(DigitlabError):
        serve(workers=-1)


def test_workers_default_to_one_per_core_at_most_four(monkeypatch):
    """2 cores -> 2 workers: one process uses about one core (the GIL), so the default uses them all."""
    from digitlab.api import server

    for cores, expected in ((1, 1), (2, 2), (3, 3), (16, server.AUTO_MAX_WORKERS)):
        monkeypatch.setattr(server.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert server.resolve_workers(0) == expected
    assert server.resolve_workers(3) == 3
    from digitlab.core.config import Settings

    assert Settings().workers == 0


def test_fast_json_bodies():
    """orjson bodies are compact JSON, and JSON bodies with NaN are refused."""
    from digitlab.api import deps
    from digitlab.api.routes import predict

    body = deps.FastJSONResponse({"digit": 7, "probabilities": [0.5, 0.5]}).body
    assert body == b'{"digit":7,"probabilities":[0.5,0.5]}'
    assert predict._loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        predict._loads(b'{"true_digit": NaN}')


def test_base64_variants():
    from digitlab.api.errors import ApiError
    from digitlab.api.routes.predict import decode_base64_image

    raw = bytes(range(256))
    import base64

    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "data:image/png;base64," + base64.b64encode(raw).decode(),
        "\n".join(base64.encodebytes(raw).decode().split("\n")),
    ):
        assert decode_base64_image(text) == raw
    for bad in ("@@@", "data:image/png,abc", "a"):
        with pytest.raises(ApiError):
            decode_base64_image(bad)


def test_serving_runs_blas_on_one_thread(tmp_path, served_model_dir):
    """Parallelism comes from requests: multi-threaded BLAS on one drawing only burns CPU spinning.
    The lifespan runs in the main thread here, as under uvicorn (OpenBLAS ignores the setting when
    it comes from another thread, e.g. TestClient's portal)."""

    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=2)  # what numpy starts with on a 2-core machine
    app = create_app(settings_for(tmp_path, served_model_dir))

    async def serve_once() -> list[int]:
        async with app.router.lifespan_context(app):
            return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    threads = run_in_fresh_loop(serve_once())
    assert threads and set(threads) == {1}


def test_logging_settles_quietly_when_the_waiter_gave_up(tmp_path, served_model_dir, caplog):
    """A client that disconnects cancels the route's wait; the commit still happens and nothing is
    raised in the store's writer thread."""
    import logging
    import threading

    from digitlab.api.context import AppContext
    from digitlab.api.metrics import Metrics
    from digitlab.api.prediction import compute_predictions
    from digitlab.api.recording import log_predictions_async
    from digitlab.models.registry import ModelRegistry
    from digitlab.store import PredictionStore

    store = PredictionStore(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "spool").start()
    release = threading.Event()
    insert_many = store.repo.insert_many
    store.repo.insert_many = lambda records: (release.wait(10), insert_many(records))[1]
    ctx = AppContext(settings=Settings(_env_file=None), registry=ModelRegistry(served_model_dir).load_all(),
                     metrics=Metrics(), store=store)
    try:
        computed = compute_predictions(ctx, draw_digit(7), [ctx.registry.get("cnn")])
        with caplog.at_level(logging.ERROR):
            waiter = log_predictions_async(ctx, computed)
            assert waiter.cancel()  # what asyncio.wrap_future does when the request task is cancelled
            release.set()
            assert store.wait_drained(10)
            store.writer.close()  # the writer has run every callback
        assert store.count() == 1 and computed.results[0]["logged"] is True
        assert "exception calling callback" not in caplog.text
    finally:
        store.close()


def _stalled(headers, **limits) -> list[dict]:
    """Run BodyLimitMiddleware over a POST whose body stops after 100 bytes; returns what it sent."""
    import asyncio

    sent = []
    chunks = [{"type": "http.request", "body": b"x" * 100, "more_body": True}]

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the rest never comes

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not be called")

    mw = BodyLimitMiddleware(app, max_bytes=1000, idle_seconds=0.2, **limits)
    run_in_fresh_loop(asyncio.wait_for(mw({"type": "http", "method": "POST", "headers": headers}, receive, send), 5))
    return sent


def test_a_body_that_stops_arriving_is_answered_408():
    """A client that declares more than it sends (or a slow-loris) held its connection for good: the server
    has no body timeout of its own. After `idle_seconds` without a byte it gets a JSON 408."""
    counted = []
    sent = _stalled([(b"content-length", b"200")], on_error=counted.append)
    assert sent[0]["status"] == 408 and b'"request_timeout"' in sent[1]["body"]
    assert (b"connection", b"close") in sent[0]["headers"]
    assert counted == ["request_timeout"]  # in digitlab_errors_total (it was missing there)


def test_a_body_that_trickles_in_is_answered_408_at_the_deadline():
    """A byte every little while never idles long enough for the idle timeout: such connections were held
    for good (375 of them took a worker's every file descriptor). The whole body has `total_seconds`."""
    import asyncio
    import time

    sent = []

    async def receive():
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not be called")

    mw = BodyLimitMiddleware(app, max_bytes=100_000, idle_seconds=0.5, total_seconds=0.6)
    started = time.monotonic()
    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"90000")]}
    run_in_fresh_loop(asyncio.wait_for(mw(scope, receive, send), 5))
    assert sent[0]["status"] == 408 and b'"request_timeout"' in sent[1]["body"]
    assert 0.55 < time.monotonic() - started < 2.0


def test_an_oversized_body_that_stops_arriving_is_answered_413():
    """Declared over the limit (so read and thrown away, for the client to read the 413), then stopped:
    the connection was held with no answer for as long as the client liked."""
    sent = _stalled([(b"content-length", b"2500")], drain_bytes=3000)
    assert sent[0]["status"] == 413


def test_a_learned_version_is_loaded_once_even_if_its_manifest_names_another_file(tmp_path, served_model_dir):
    """A fine-tuned CNN's manifest named its parent's SHA-256: every poll saw "a new version" and every API
    worker loaded it again, every 5 s, for as long as it was served (199 log lines in 15 minutes)."""
    import json

    from sqlalchemy import text

    from digitlab.api.upkeep import refresh_learned
    from digitlab.models.artifacts import read_verified

    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app):
        ctx = app.state.ctx
        manifest, payload = read_verified(served_model_dir, "svm")
        ctx.store.versions.add("svm", "2", payload, {**manifest, "version": "2"}, status="promoted", parent="1.0.0")
        with ctx.store.engine.begin() as conn:  # as stored before session 11: the parent's hash in its manifest
            conn.execute(text("UPDATE model_versions SET manifest = :m"), {"m": json.dumps({**manifest, "version": "2", "sha256": "0" * 64})})
        ctx.registry.get("svm").manifest["sha256"] = "f" * 64  # the files serve another build than version 2
        installs = []
        real_install = ctx.registry.install
        ctx.registry.install = lambda model, **kw: (installs.append(model.version), real_install(model, **kw))
        for _ in range(3):
            refresh_learned(ctx)
        assert installs == ["2"]
        assert ctx.registry.get("svm").version == "2"


def test_a_promotion_between_two_versions_of_the_same_bytes_is_served(tmp_path, served_model_dir):
    """A learning run on unchanged data builds the very model again (the same SHA-256): promoting the older
    twin back was never noticed, and the API went on naming (and recording) the newer one until a restart."""
    from digitlab.api.upkeep import refresh_learned
    from digitlab.models.artifacts import read_verified

    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app) as c:
        ctx, versions = app.state.ctx, app.state.ctx.store.versions
        manifest, payload = read_verified(served_model_dir, "svm")
        for v in ("2", "3"):
            versions.add("svm", v, payload, {**manifest, "version": v}, status="candidate", parent="1.0.0")
        versions.promote("svm", "3")
        refresh_learned(ctx)
        assert ctx.registry.get("svm").version == "3"
        versions.promote("svm", "2")
        refresh_learned(ctx)
        assert ctx.registry.get("svm").version == "2"
        answer = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"model": "svm"}).json()
        assert answer["model_version"] == "2"


def test_a_rollback_to_the_files_leaves_no_moment_without_the_model(tmp_path, served_model_dir):
    """A rollback took the learned version out and loaded the files after it: requests in between were 503
    "Model 'svm_pca' is not trained: run `digitlab train svm_pca`" (a probe, session 49: 17 of 9,423 under load,
    2 workers, three promotions and rollbacks). The files' model is swapped in in one step now."""
    from digitlab.api.upkeep import refresh_learned, refresh_models
    from digitlab.models.artifacts import read_verified

    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app) as c:
        ctx, versions = app.state.ctx, app.state.ctx.store.versions
        manifest, payload = read_verified(served_model_dir, "svm")
        versions.add("svm", "2", payload, {**manifest, "version": "2"}, status="promoted", parent="1.0.0")
        refresh_models(ctx)
        assert ctx.registry.get("svm").version == "2"
        assert versions.rollback("svm") is None  # no earlier learned version: back to the files
        installs = []
        real_install = ctx.registry.install
        ctx.registry.install = lambda model, **kw: (installs.append(model.version), real_install(model, **kw))
        refresh_learned(ctx)  # (the poll's first step: no request may find the model gone after it)
        assert ctx.registry.get("svm") is not None and ctx.registry.get("svm").version == "1.0.0"
        assert ctx.registry.learned_names() == set()
        refresh_models(ctx)
        assert installs == ["1.0.0"]  # loaded once
        answer = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"model": "svm"}).json()
        assert answer["model_version"] == "1.0.0"


def test_a_promoted_version_is_served_from_the_first_request(tmp_path, served_model_dir):
    """A (re)started replica said ready and answered with the model files until its first poll, 5 s later."""
    from digitlab.models.artifacts import read_verified

    settings = settings_for(tmp_path, served_model_dir)
    app = create_app(settings)
    with TestClient(app):
        manifest, payload = read_verified(served_model_dir, "svm")
        app.state.ctx.store.versions.add("svm", "2", payload, {**manifest, "version": "2"}, status="promoted",
                                         parent="1.0.0")  # fmt: skip
    with TestClient(create_app(settings)) as c:  # a restart
        answer = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"model": "svm"}).json()
        assert answer["model_version"] == "2"


def test_a_promoted_version_that_cannot_be_loaded_is_tried_once(tmp_path, served_model_dir):
    """A damaged promoted version was read from the database and logged as unloadable every poll (5 s), by
    every worker, for as long as it stayed promoted; the served model stays what it was."""
    from sqlalchemy import text

    from digitlab.api.upkeep import refresh_learned
    from digitlab.models.artifacts import read_verified

    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app):
        ctx = app.state.ctx
        manifest, payload = read_verified(served_model_dir, "svm")
        ctx.registry.get("svm").manifest["sha256"] = "f" * 64  # the files serve another build than version 2
        ctx.store.versions.add("svm", "2", payload, {**manifest, "version": "2"}, status="promoted", parent="1.0.0")
        with ctx.store.engine.begin() as conn:
            conn.execute(text("UPDATE model_versions SET artifact = :a"), {"a": payload[:1000]})
        loads = []
        real_load = ctx.store.load_version
        ctx.store.load_version = lambda *a: (loads.append(a), real_load(*a))[1]
        for _ in range(3):
            refresh_learned(ctx)
        assert len(loads) == 1 and ctx.registry.get("svm").version != "2"


def test_health_names_a_detector_or_verifier_that_could_not_be_loaded(tmp_path, served_model_dir, png):
    """A broken detector, segment verifier or line reader in the model folder is logged at start-up and named in
    /health (the flag then uses the model's confidence only, /read the model alone); predictions still answer."""
    from drawn_numbers import draw_number

    model_dir = tmp_path / "models"
    shutil.copytree(served_model_dir, model_dir)
    with TestClient(create_app(settings_for(tmp_path, model_dir))) as c:
        assert c.get("/health").json()["components"] == {"detector": "ready", "segment_verifier": "ready",
                                                         "line_reader": "ready"}  # fmt: skip
    for part in ("detector", "segment_verifier", "line_reader"):
        (model_dir / f"{part}.json").write_text("{not json")
    with TestClient(create_app(settings_for(tmp_path, model_dir))) as c:
        body = c.get("/health").json()
        assert body["components"] == {"detector": "missing", "segment_verifier": "missing", "line_reader": "missing"}
        assert c.post("/api/v1/read", files={"image": ("n.png", draw_number("42"))}).json()["text"] == "42"
        assert body["status"] == "ok"  # the models and the database answer
        assert c.post("/api/v1/predict", files={"image": ("d.png", png)}).status_code == 200


def test_an_export_cut_short_by_a_database_hang_leaves_no_file(tmp_path, served_model_dir, monkeypatch):
    """The store gives up waiting (503) while its thread goes on writing the export: written by name, the
    file was re-created after the route removed it (a 51 MB CSV left in /tmp per export cut short)."""
    import tempfile
    import threading
    import time

    from digitlab.store import DatabaseUnavailableError, export

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    late = threading.Event()
    data = tmp_path / "data"  # where the export is written (settings_for's data folder)

    def hung_export(out):  # the store's thread writes on after the request was answered
        def later():
            time.sleep(0.3)
            try:
                export.write_csv(iter(()), out)  # what the store's export does with what the route gave it
            except ValueError:
                pass  # the route closed its end: nothing to write to
            late.set()

        threading.Thread(target=later).start()
        raise DatabaseUnavailableError("the prediction database is unavailable; try again shortly")

    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        monkeypatch.setattr(c.app.state.ctx.store, "export_csv", hung_export)
        assert_error(c.get("/api/v1/export.csv"), 503, "database_unavailable")
        assert late.wait(5)
    assert list(scratch.iterdir()) == []
    assert [p.name for p in data.iterdir() if "export" in p.name] == []


def test_export_and_workers_metrics_need_no_system_temporary_folder(tmp_path, served_model_dir, monkeypatch):
    """In a container with a read-only root filesystem the system's temporary folder cannot be written:
    the export (a 500) and several workers' metrics folder (a traceback at start) are made in the data
    folder, which `serve` checks is writable."""
    import tempfile

    from digitlab.api.server import _shared_metrics

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "read-only-root" / "tmp"))  # does not exist
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"true_digit": "7"})
        r = c.get("/api/v1/export.csv")
        assert r.status_code == 200 and r.text.count("\n") == 2, r.text[:200]
        for asked in ("bytes=abc", "bytes=5-1", "items=0-5", "bytes=99999999-", "bytes=0-9"):  # (a plain-text 400 or
            ranged = c.get("/api/v1/export.csv", headers={"Range": asked})  # 416, and the export file left behind)
            assert ranged.status_code == 200 and ranged.text == r.text, (asked, ranged.status_code, ranged.text[:100])
            assert ranged.headers["accept-ranges"] == "none"
    assert [p.name for p in (tmp_path / "data").iterdir() if "export" in p.name] == []  # removed once sent
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr("digitlab.api.server.MEMORY_FOLDERS", (str(tmp_path / "no-shared-memory"),))
    with _shared_metrics(2, tmp_path / "data"):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.parent == tmp_path / "data" and folder.is_dir()
    assert not folder.exists()


def test_learn_now_answered_503_leaves_no_job_that_blocks_the_next(tmp_path, served_model_dir, monkeypatch):
    """A database that answers after the request gave up (a freeze): "Learn now" got a 503, yet the job's row
    arrived, "queued" with no process behind it, and the next "Learn now" was a 409 (a probe, session 45). The
    job is marked failed ("abandoned") as soon as its row is there."""
    from digitlab.api.routes import learn
    from digitlab.store.db import DatabaseUnavailableError
    from digitlab.store.versions import VersionStore

    real, queued = VersionStore.create_job_if_idle, []

    def committed_too_late(self, *args, **kwargs):
        queued.append(real(self, *args, **kwargs))  # the row is written...
        raise DatabaseUnavailableError("the database did not answer in time")  # ...after the request gave up

    monkeypatch.setattr(VersionStore, "create_job_if_idle", committed_too_late)
    admin = {"Authorization": "Bearer t0ken-for-tests"}
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, admin_token="t0ken-for-tests"))) as c:
        assert_error(c.post("/api/v1/learn", headers=admin), 503, "database_unavailable")
        versions = c.app.state.ctx.store.versions
        deadline = time.monotonic() + 10
        while versions.busy_job() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert versions.busy_job() is None  # the next "Learn now" may start a run
        job = versions.job(queued[0])
        assert (job["status"], job["message"]) == ("failed", learn.ABANDONED), job


def test_workers_count_a_drawing_once_whichever_answers_its_strokes(tmp_path, monkeypatch):
    """Each worker remembered the drawings it had answered: a drawing whose strokes landed on two workers counted
    two in `digitlab_predictions_total` (a probe, session 45: 10 strokes, +2). Workers share that memory (a
    worker in another process here, as `serve` starts them)."""
    import subprocess
    import sys

    from digitlab.api.metrics import Metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    one, other = Metrics(), Metrics()
    assert one.first_answer("d1", "svm") and not other.first_answer("d1", "svm")
    assert other.first_answer("d1", "cnn") and other.first_answer("d2", "svm") and not one.first_answer("d2", "svm")
    assert one.first_answer(None, "svm") and other.first_answer(None, "svm")  # no drawing: each its own
    child = ("from digitlab.api.metrics import Metrics; m = Metrics(); "
             "print(m.first_answer('d1', 'svm'), m.first_answer('d3', 'svm'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out
    assert not one.first_answer("d3", "svm")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    alone = Metrics()  # one process: its own memory, as before
    assert alone.first_answer("d1", "svm") and not alone.first_answer("d1", "svm")


def test_workers_metrics_go_to_shared_memory_not_the_data_disk(tmp_path, monkeypatch):
    """Workers write their metrics through mmap: with them on the data disk, a full disk killed every worker
    (SIGBUS) as it started, in a loop, and the API answered nothing (a probe, session 30)."""
    from digitlab.api.server import _shared_metrics

    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr("digitlab.api.server.MEMORY_FOLDERS", (str(memory),))
    with _shared_metrics(2, tmp_path / "data"):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.parent == memory and folder.is_dir()
    assert not folder.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_a_store_that_cannot_start_is_tried_again(tmp_path, served_model_dir, monkeypatch):
    """A worker started while its spool folder could not be made (a full disk, an immutable folder) stored nothing
    for its whole life and said the database was unavailable (a probe, session 30): it tries again every few
    seconds, and logs the predictions once it can."""
    import time

    monkeypatch.setattr("digitlab.api.main.MODEL_REFRESH_SECONDS", 0.2)
    (tmp_path / "data").mkdir()
    blocker = tmp_path / "data" / "spool"
    blocker.write_text("a file where the spool folder goes")
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        first = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())})
        assert first.status_code == 200 and first.json()["logged"] is False
        blocker.unlink()
        deadline = time.monotonic() + 20
        while c.get("/health").json()["database"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
        second = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit(200))})
        assert second.status_code == 200 and second.json()["logged"] is True and second.json()["id"] is not None


def test_learning_over_http_needs_an_admin_token_set(tmp_path, served_model_dir):
    """Without DIGITLAB_ADMIN_TOKEN history stays open (a local demo), but nobody may start minutes of
    training on the server's CPU: 403 `admin_only`, saying how to allow it."""
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        body = assert_error(c.post("/api/v1/learn"), 403, "admin_only")
        assert "DIGITLAB_ADMIN_TOKEN" in body["detail"]
        assert c.get("/api/v1/learn/" + "0" * 32).status_code == 404  # following a job stays open


def test_a_head_request_is_counted_under_its_route(tmp_path, served_model_dir):
    """HEAD is routed as a GET (`head.py`); the metrics counted it under route "unmatched"."""
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        assert c.head("/health").status_code == 200
        text = c.get("/metrics").text
        assert 'digitlab_http_requests_total{method="HEAD",model="",route="/health",status="200"} 1.0' in text, [
            line for line in text.splitlines() if "HEAD" in line
        ]


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(tmp_path, served_model_dir):
    """A client gone before its body was complete was counted as a 500 of route "unmatched": any 5xx alert
    fired on flaky phone uploads. It is a 499 (the client closed the request) of the route it asked for."""
    import asyncio

    app = create_app(settings_for(tmp_path, served_model_dir))
    with TestClient(app) as c:
        messages = [{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            raise AssertionError(f"nobody to answer: {message}")

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/api/v1/predict", "raw_path": b"/api/v1/predict", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"x"), (b"content-length", b"1000")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80), "app": app}  # fmt: skip
        run_in_fresh_loop(asyncio.wait_for(app(scope, receive, send), 5))
        text = c.get("/metrics").text
        lines = [line for line in text.splitlines() if line.startswith('digitlab_http_requests_total{method="POST"')]
        assert lines == ['digitlab_http_requests_total{method="POST",model="",route="/api/v1/predict",status="499"} 1.0'], lines


def test_a_reading_is_not_computed_for_a_client_that_left(tmp_path, served_model_dir, png, monkeypatch):
    """A `/read` costs up to a second of CPU; one whose client hung up while it waited for a CPU slot was
    computed (and stored) all the same. It is dropped, counted as a 499; a client still there is answered."""
    import asyncio

    from digitlab.api.routes import read as read_route

    computed = []
    real = read_route.compute_reading
    monkeypatch.setattr(read_route, "compute_reading", lambda *a, **k: computed.append(1) or real(*a, **k))
    app = create_app(settings_for(tmp_path, served_model_dir))
    boundary = "dlboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="n.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip

    def call(gone: bool) -> list[dict]:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if messages:
                return messages.pop(0)
            if gone:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # still there: nothing more to say

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/api/v1/read", "raw_path": b"/api/v1/read", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"x"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app}  # fmt: skip
        run_in_fresh_loop(asyncio.wait_for(app(scope, receive, send), 30))
        return sent

    with TestClient(app) as c:
        assert call(gone=True)[0]["status"] == 499 and computed == []
        assert call(gone=False)[0]["status"] == 200 and computed == [1]
        text = c.get("/metrics").text
        statuses = sorted(line.split('status="')[1][:3] for line in text.splitlines()
                          if line.startswith('digitlab_http_requests_total{method="POST"') and "/api/v1/read" in line)  # fmt: skip
        assert statuses == ["200", "499"], statuses


def test_learn_now_names_the_run_going_on_and_reaps_the_one_it_starts(tmp_path, served_model_dir, monkeypatch):
    """409 said "follow it" without saying which run (one started by the CLI or cron cannot be found over
    HTTP); a job id in capitals was 422; the run it started stayed a zombie under the worker."""
    import subprocess
    import sys

    import psutil

    from digitlab.api.routes import learn as learn_route

    started: list[subprocess.Popen] = []
    argvs: list[list[str]] = []
    popen = subprocess.Popen

    def quick_run(argv, **kwargs):  # a run that ends at once instead of `digitlab learn`
        argvs.append(argv)
        started.append(popen([sys.executable, "-c", "pass"], **kwargs))
        return started[-1]

    monkeypatch.setattr(learn_route.subprocess, "Popen", quick_run)
    admin = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, admin_token="s3cret"))) as c:
        job = c.post("/api/v1/learn", headers=admin).json()["job_id"]
        body = assert_error(c.post("/api/v1/learn", headers=admin), 409, "learning_busy")
        assert f"follow it at /api/v1/learn/{job}" in body["detail"]
        answer = c.get(f"/api/v1/learn/{job.upper()}")
        assert answer.status_code == 200 and answer.json()["id"] == job
        (run,) = started
        deadline = time.monotonic() + 10
        while psutil.pid_exists(run.pid) and time.monotonic() < deadline:  # a zombie still "exists"
            time.sleep(0.05)
        assert not psutil.pid_exists(run.pid), psutil.Process(run.pid).status()
        assert argvs[0][-2:] == ["--job-id", job]  # no body: every model


def test_learn_now_can_name_the_models(tmp_path, served_model_dir, monkeypatch):
    """A body `{"models": [...]}` was ignored: every run fine-tuned the CNN too (10 minutes here)."""
    import subprocess

    from digitlab.api.routes import learn as learn_route

    argvs: list[list[str]] = []
    popen = subprocess.Popen
    monkeypatch.setattr(learn_route.subprocess, "Popen", lambda argv, **kw: argvs.append(argv) or popen(["true"]))
    admin = {"Authorization": "Bearer s3cret"}
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, admin_token="s3cret"))) as c:
        for body in ({"models": ["nosuch"]}, {"models": []}, {"models": "svm"}):
            detail = assert_error(c.post("/api/v1/learn", headers=admin, json=body), 422, "invalid_fields")["detail"]
            assert "models" in detail, detail
        assert not argvs  # nothing started
        job = c.post("/api/v1/learn", headers=admin, json={"models": ["svm_pca", "svm", "svm_pca"]}).json()["job_id"]
        assert argvs == [[*argvs[0][:3], "learn", "--job-id", job, "svm_pca", "svm"]]


def test_learn_now_checks_the_token_before_reading_the_body(tmp_path, served_model_dir, monkeypatch):
    """FastAPI parsed the declared body before any dependency: a malformed body without the token was 422
    ("the body is not valid JSON", "'models': ..."), a hint at the API, where it must be 401."""
    from digitlab.api.routes import learn as learn_route

    monkeypatch.setattr(learn_route.subprocess, "Popen", lambda *a, **kw: pytest.fail("no run may start"))
    bodies = [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"models": ["nosuch"]}},
        {"content": b"models=svm", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ]
    with TestClient(create_app(settings_for(tmp_path, served_model_dir, admin_token="s3cret"))) as c:
        for body in bodies:
            assert_error(c.post("/api/v1/learn", **body), 401, "unauthorized")
        admin = {"Authorization": "Bearer s3cret"}
        detail = assert_error(c.post("/api/v1/learn", content=b"{not json", headers={**admin, "Content-Type": "application/json"}), 422, "invalid_fields")["detail"]
        assert "not valid JSON" in detail
        assert_error(c.post("/api/v1/learn", content=b"models=svm", headers={**admin, "Content-Type": "text/plain"}), 415, "unsupported_media_type")
        assert "requestBody" in c.get("/openapi.json").json()["paths"]["/api/v1/learn"]["post"]


def test_the_api_log_lines_start_with_their_time():
    """During an outage the order of events across workers could not be told from the log (no times)."""
    import logging
    import re

    from uvicorn.logging import AccessFormatter, DefaultFormatter

    from digitlab.api.server import log_config

    for name, config in log_config()["formatters"].items():
        kind = AccessFormatter if name == "access" else DefaultFormatter
        formatter = kind(fmt=config["fmt"], datefmt=config.get("datefmt"), use_colors=False)
        args = ("1.2.3.4:5", "GET", "/", "1.1", 200) if name == "access" else None
        record = logging.LogRecord("uvicorn.access" if args else "digitlab.store", logging.WARNING, __file__, 1,
                                   '%s - "%s %s HTTP/%s" %d' if args else "database unavailable", args, None)  # fmt: skip
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING: ", formatter.format(record)), name


def test_a_model_folder_that_does_not_exist_is_said_at_start(tmp_path, caplog):
    """A typo in DIGITLAB_MODEL_DIR served the bundled CNN alone with nothing in the log but "svm=missing"."""
    app = create_app(settings_for(tmp_path, tmp_path / "no-such-models"))
    with caplog.at_level(logging.WARNING, logger="digitlab.api"), TestClient(app) as c:
        assert c.get("/health").status_code == 200
    assert any("DIGITLAB_MODEL_DIR=" in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serving_beyond_this_machine_without_an_admin_token_is_warned(tmp_path, monkeypatch, capsys, host, warned):
    """Without DIGITLAB_ADMIN_TOKEN the history, images, export and deletion are open (a local demo); a server
    listening beyond loopback says so at start (an example Ingress published them without a word)."""
    from digitlab.api import server
    from digitlab.core.config import get_settings

    for var in ("DIGITLAB_ADMIN_TOKEN", "DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST", "DIGITLAB_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGITLAB_WORKERS", "1")  # (serve sets it for its workers: put back after the test)
    monkeypatch.setattr(server, "_run_uvicorn", lambda *a: None)
    monkeypatch.setattr(server, "refuse_busy_port", lambda *a: None)
    get_settings.cache_clear()
    try:
        assert server.serve(host=host, port=0, workers=1) == 0
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert ("DIGITLAB_ADMIN_TOKEN is not set" in err) is warned, err


def test_a_digit_photographed_turned_on_a_dark_table_is_answered(tmp_path, served_model_dir):
    """A 7 filling a photo of paper, turned a little on a dark table and shaded: "No digit found: the picture is
    busy all over" (its border is part table). Refused pictures are read once more as paper flattened against
    its own light; what was answered before is preprocessed as before."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    paper = Image.new("RGB", (1000, 900), (236, 230, 214))
    ImageDraw.Draw(paper).line([(420, 220), (640, 220), (500, 640)], fill=(30, 40, 120), width=26, joint="curve")
    photo = np.asarray(paper.rotate(4, resample=Image.BICUBIC, fillcolor=(60, 60, 60))).astype(np.float32)
    yy, xx = np.mgrid[0:900, 0:1000]
    photo *= (1.0 - 0.55 * np.clip(xx / 1000 * 0.6 + yy / 900 * 0.7 - 0.35, 0, 1))[..., None]
    out = io.BytesIO()
    Image.fromarray(photo.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)).save(out, "JPEG", quality=70)
    with TestClient(create_app(settings_for(tmp_path, served_model_dir))) as c:
        r = c.post("/api/v1/predict", files={"image": ("seven.jpg", out.getvalue(), "image/jpeg")}, data={"model": "cnn"})
        assert r.status_code == 200, r.text
        assert r.json()["digit"] == 7
        noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)  # busy, and no paper
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "PNG")
        assert_error(c.post("/api/v1/predict", files={"image": ("noise.png", buf.getvalue())}), 400, "empty_image")


def test_the_cnns_answers_name_the_svm_it_asks_and_numbers_are_read_by_the_cnn_alone(tmp_path, partnered_model_dir):
    """Beside a trained svm the CNN asks it about the drawings it doubts: a stored prediction names both versions
    (its answer equals the served model's); `/read` reads with the CNN alone and names its version only."""
    import numpy as np

    from digitlab.errors import DigitlabError
    from digitlab.models.registry import SECOND_OPINION_BELOW
    from digitlab.preprocess import to_mnist
    from digitlab.synth.datasets import scribbles
    from drawn_numbers import draw_number

    with TestClient(create_app(settings_for(tmp_path, partnered_model_dir))) as c:
        registry = c.app.state.ctx.registry
        served, alone = registry.get("cnn"), registry.get("cnn").with_partner(None)
        assert served.partner is registry.get("svm")
        doubtful = None
        for png in scribbles(40, seed=11, as_png=True)[0]:  # a drawing the CNN alone is not sure of
            try:
                x = to_mnist(png).reshape(1, 784)
            except DigitlabError:
                continue
            if alone.predict_proba(x).max() < SECOND_OPINION_BELOW:
                doubtful = png, x
                break
        assert doubtful is not None
        p = c.post("/api/v1/predict", files={"image": ("d.png", doubtful[0])}, data={"model": "cnn"}).json()
        assert p["model_version"] == f"{served.version}+svm:{registry.get('svm').version}"
        np.testing.assert_allclose(p["probabilities"], served.predict_proba(doubtful[1])[0], atol=1e-6)
        assert not np.allclose(p["probabilities"], alone.predict_proba(doubtful[1])[0], atol=1e-3)
        row = c.get(f"/api/v1/predictions/{p['id']}").json()
        assert row["model_version"] == p["model_version"]
        read = c.post("/api/v1/read", files={"image": ("n.png", draw_number("42"))}, data={"model": "cnn"}).json()
        assert read["model_version"] == str(served.version)
        asks = {m["name"]: m["asks"] for m in c.get("/api/v1/models").json() if m["status"] == "ready"}
        assert asks["cnn"] == "svm" and asks["svm"] is None  # the Models page says why two versions are named


@pytest.mark.parametrize("how", ["deleted", "corrupted"])
def test_a_served_artefact_deleted_or_corrupted_under_its_manifest_is_said(tmp_path, tiny_model_dir, png, how):
    """The artefact deleted, or a byte of it flipped, with its manifest left alone: `/models` said ready with no
    error until the next start found it broken (a probe, session 30). The served model stays, and says why."""
    model_dir = _svm_only(tmp_path, tiny_model_dir)
    with TestClient(create_app(settings_for(tmp_path, model_dir))) as c:
        ctx = c.app.state.ctx
        refresh_models(ctx)  # nothing changed: nothing said
        svm = next(m for m in c.get("/api/v1/models").json() if m["name"] == "svm")
        assert (svm["status"], svm["error"]) == ("ready", None)
        artefact = model_dir / "svm.joblib"
        if how == "deleted":
            artefact.unlink()
        else:
            data = bytearray(artefact.read_bytes())
            data[len(data) // 2] ^= 0xFF
            artefact.write_bytes(bytes(data))
        refresh_models(ctx)
        svm = next(m for m in c.get("/api/v1/models").json() if m["name"] == "svm")
        said = "is missing" if how == "deleted" else "SHA-256"
        assert svm["status"] == "ready" and said in svm["error"] and "is served until it is fixed" in svm["error"], svm
        r = c.post("/api/v1/predict", files={"image": ("d.png", png)}, data={"model": "svm"})
        assert r.status_code == 200 and r.json()["model"] == "svm"
