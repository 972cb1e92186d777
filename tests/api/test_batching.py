"""Micro-batches: the same answers as one request at a time, errors kept per request, every
concurrent prediction answered and stored exactly once."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from tests.api.conftest import draw_digit

from digitlab.api.context import AppContext
from digitlab.api.metrics import Metrics
from digitlab.api.prediction import Computed, Job, compute_batch, compute_predictions
from digitlab.core.config import Settings
from digitlab.detector.runtime import load_detector
from digitlab.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def ctx(served_model_dir) -> AppContext:
    registry = ModelRegistry(served_model_dir).load_all()
    context = AppContext(settings=Settings(_env_file=None), registry=registry, metrics=Metrics())
    context.detector = load_detector(served_model_dir)
    return context


def test_a_batch_answers_like_one_request_at_a_time(ctx):
    models = [ctx.registry.get(name) for name in ctx.registry.ready_names()]
    assert len(models) >= 2
    drawings = [draw_digit(200 + 10 * d, pen=["#000000", "#1f2340", "#aa0000"][d % 3]) for d in range(10)]
    jobs = [Job(png, models[: 1 + i % len(models)], session_id=f"s{i}") for i, png in enumerate(drawings)]
    batched = compute_batch(ctx, jobs)
    for job, outcome in zip(jobs, batched, strict=True):
        alone = compute_predictions(ctx, job.data, job.models, session_id=job.session_id)
        assert isinstance(outcome, Computed)
        assert outcome.processed_b64 == alone.processed_b64
        assert [r["model"] for r in outcome.results] == [m.name for m in job.models]
        for a, b in zip(outcome.results, alone.results, strict=True):
            assert a["digit"] == b["digit"] and a["uncertain"] == b["uncertain"]
            np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=0, atol=1e-6)
        assert len({r.uid for r in outcome.records}) == len(job.models)


def test_records_are_timed_when_their_request_arrived(ctx):
    """Of two strokes of a drawing in flight at once, the one sent later must win in the store: a record timed
    when it was answered let an earlier stroke, answered later, replace it (a probe, session 45)."""
    import time
    from datetime import UTC, datetime, timedelta

    cnn = ctx.registry.get("cnn")
    sent_later = Job(draw_digit(), [cnn], drawing_id="d")
    sent_earlier = Job(draw_digit(200), [cnn], drawing_id="d", received=sent_later.received - timedelta(seconds=1))
    time.sleep(0.05)
    computed = compute_batch(ctx, [sent_later, sent_earlier])
    answered = datetime.now(UTC)
    assert [c.records[0].timestamp for c in computed] == [sent_later.received, sent_earlier.received]
    assert sent_later.received < answered - timedelta(seconds=0.04)


def test_a_bad_image_fails_only_its_own_request(ctx):
    cnn = ctx.registry.get("cnn")
    jobs = [Job(draw_digit(), [cnn]), Job(b"not an image", [cnn]), Job(draw_digit(240), [cnn])]
    good, bad, other = compute_batch(ctx, jobs)
    assert isinstance(good, Computed) and isinstance(other, Computed)
    assert getattr(bad, "code", None) == "unreadable_image"


def test_a_photo_is_a_batch_of_its_own_and_holds_no_drawing_queued_before_it():
    """Drawings queued while the CPU is busy share a batch, but a photo (`heavy`: ~100x a drawing's cost) is
    computed alone, in its turn: a drawing queued before it is answered without waiting for it."""
    from concurrent.futures import Future
    from time import monotonic, sleep

    from digitlab.api.batching import HEAVY_BYTES, PredictionBatcher, heavy

    drawing = draw_digit()
    photo = b"\xff\xd8\xff" + bytes(1000)  # (a JPEG's first bytes: never read here)
    assert not heavy(Job(drawing, [])) and heavy(Job(photo, [])) and heavy(Job(drawing + bytes(HEAVY_BYTES), []))
    batches: list[list[str]] = []

    class Timed(PredictionBatcher):
        def _compute(self, jobs):
            batches.append([j.session_id for j in jobs])
            sleep(0.4 if any(heavy(j) for j in jobs) else 0.1)
            logged: Future = Future()
            logged.set_result(True)
            return [monotonic() for _ in jobs], logged

    async def run():
        batcher = Timed(None, slots=1)
        names = ["a", "b", "photo", "c", "d"]
        tasks = {n: asyncio.ensure_future(batcher.predict(Job(photo if n == "photo" else drawing, [], session_id=n)))
                 for n in names}  # fmt: skip
        done = dict(zip(names, await asyncio.gather(*tasks.values()), strict=True))
        batcher.close()
        return done

    done = asyncio.run(run())
    assert batches == [["a"], ["b"], ["photo"], ["c", "d"]]
    assert done["b"] < done["photo"] - 0.3  # answered before the photo was computed, not with it


def test_concurrent_predictions_are_answered_and_stored_once(live_server, admin):
    drawings = [draw_digit(180 + 4 * i, pen=["#000000", "#1f2340"][i % 2]) for i in range(48)]

    async def fire():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:

            async def one(i, png):
                files = {"image": ("d.png", png, "image/png")}
                return await client.post("/api/v1/predict", files=files, data={"session_id": f"batch-{i}"})

            return await asyncio.gather(*(one(i, png) for i, png in enumerate(drawings)))

    answers = asyncio.run(fire())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:2]
    bodies = [a.json() for a in answers]
    assert all(b["logged"] and b["id"] is not None for b in bodies)
    assert len({b["id"] for b in bodies}) == len(bodies)  # a row each
    with live_server.client() as api:
        rows = api.get("/api/v1/predictions", params={"page_size": 500}, headers=admin).json()["items"]
        stored = [row for row in rows if row["id"] in {b["id"] for b in bodies}]
        assert sorted(r["uid"] for r in stored) == sorted(b["uid"] for b in bodies)
        for body in bodies[::8]:
            row = api.get(f"/api/v1/predictions/{body['id']}", headers=admin).json()
            assert row["session_id"] == next(
                f"batch-{i}" for i, b in enumerate(bodies) if b["id"] == body["id"]
            )
            assert row["predicted_digit"] == body["digit"]
