"""What the routes share: the loaded models, the store, the metrics, and the prediction itself.

`run_prediction` is plain synchronous code (decode, preprocess, infer, log). The predict route runs
`compute_predictions` and hands the records to the store in one worker thread, then awaits the store's
commit on the event loop (`log_predictions_async`): the loop never does CPU work, and no thread waits.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from digitlab.api.errors import ApiError
from digitlab.api.metrics import Metrics
from digitlab.core.config import Settings
from digitlab.errors import DigitlabError
from digitlab.models.registry import MODEL_SPECS, LoadedModel, ModelRegistry, is_training, model_dirs_for

log = logging.getLogger("digitlab.api")

#: Without the not-a-digit detector, a prediction below this confidence is flagged `uncertain`.
UNCERTAIN_BELOW = 0.5
#: Seconds between checks for models whose training finished (a few stat calls; no reads when unchanged).
MODEL_REFRESH_SECONDS = 5.0
#: Non-PNG uploads are stored as a PNG no larger than this on the long side.
STORED_INPUT_MAX_SIDE = 512

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class AppContext:
    """Everything a request needs, built once at start-up (`app.state.ctx`)."""

    settings: Settings
    registry: ModelRegistry
    metrics: Metrics
    store: Any = None  # digitlab.store.PredictionStore, or None when it could not be opened
    detector: Any = None  # digitlab.uncertainty.UncertaintyDetector (flags non-digits), or None
    cpu_limiter: anyio.CapacityLimiter | None = None  # preprocessing + inference
    manifest_keys: dict[str, tuple[str, float] | None] = field(default_factory=dict)
    ready_at: float | None = None


# --------------------------------------------------------------------------------------------------
# image type by magic bytes


def sniff(data: bytes) -> str:
    """'png' | 'jpeg' | 'webp' | 'bmp' from the first bytes; raises for everything else.

    The client's declared content type is ignored: only the bytes count. A recognised image or
    document format we do not take (GIF, TIFF, PDF, SVG, HEIC, ...) is 415 `unsupported_media_type`;
    anything else (empty, garbage) is 400 `unreadable_image`.
    """
    if not data:
        raise ApiError("The image file is empty: upload a PNG, JPEG, WebP or BMP image.", "unreadable_image")
    head = data[:32]
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    from digitlab.preprocess import unsupported_format

    # GIF: `preprocess` reads its first frame, but the API's contract names PNG, JPEG, WebP and BMP only
    other = "GIF" if data[:6] in (b"GIF87a", b"GIF89a") else unsupported_format(data)
    if other:
        raise ApiError(
            f"{other} files are not supported: upload a PNG, JPEG, WebP or BMP image.",
            "unsupported_media_type",
        )
    raise ApiError(
        "The file is not an image we can read: upload a PNG, JPEG, WebP or BMP image.", "unreadable_image"
    )


# --------------------------------------------------------------------------------------------------
# choosing models


def resolve_models(ctx: AppContext, requested: str | None) -> list[LoadedModel]:
    """The model(s) a request asks for: 404 `unknown_model`, 503 `model_not_ready`."""
    registry = ctx.registry
    if requested is None:
        name = registry.default_name(ctx.settings.default_model)
        if name is None:
            raise ApiError(
                "No model is ready yet: train one with `digitlab train` (or wait for training to finish).",
                "model_not_ready",
            )
        return [registry.get(name)]
    if requested == "all":
        names = registry.ready_names()
        if not names:
            raise ApiError("No model is ready yet: train one with `digitlab train`.", "model_not_ready")
        return [registry.get(n) for n in names]
    model = registry.get(requested)
    if model is not None:
        return [model]
    if requested not in MODEL_SPECS:
        shown = requested if len(requested) <= 40 else requested[:40] + "..."
        raise ApiError(
            f"Unknown model {shown!r}: choose one of {', '.join(MODEL_SPECS)}, or 'all'.", "unknown_model"
        )
    if is_training(requested, ctx.settings.model_dir):
        raise ApiError(f"Model {requested!r} is training: try again when it is ready.", "model_not_ready")
    reason = ctx.registry.errors().get(requested)
    if reason:
        raise ApiError(
            f"Model {requested!r} could not be loaded: run `digitlab train {requested}`.", "model_not_ready"
        )
    raise ApiError(
        f"Model {requested!r} is not trained: run `digitlab train {requested}`.", "model_not_ready"
    )


# --------------------------------------------------------------------------------------------------
# the prediction


def stored_input_png(data: bytes, fmt: str) -> bytes:
    """PNG uploads are stored as sent; other formats as a PNG of at most STORED_INPUT_MAX_SIDE px."""
    if fmt == "png":
        return data
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("RGB", (STORED_INPUT_MAX_SIDE, STORED_INPUT_MAX_SIDE))
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA")
        im.thumbnail((STORED_INPUT_MAX_SIDE, STORED_INPUT_MAX_SIDE))
        out = io.BytesIO()
        im.save(out, format="PNG")
        return out.getvalue()


def preprocess(ctx: AppContext, data: bytes, *, pen_color: str | None, background_color: str | None):
    """bytes -> (28x28 float32, format). Only 4xx errors leave this function for a bad image."""
    from digitlab.preprocess import to_mnist

    fmt = sniff(data)
    try:
        image = to_mnist(
            data,
            pen_color=pen_color,
            background_color=background_color,
            max_pixels=ctx.settings.max_image_pixels,
        )
    except DigitlabError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise ApiError(
            "The image is too large to process: upload a smaller image.", "image_too_large"
        ) from exc
    except Exception as exc:  # a decoder choking on a damaged file; logged so a real bug stays visible
        log.warning("preprocessing a %s upload failed (%s: %s)", fmt, type(exc).__name__, exc, exc_info=True)
        raise ApiError(
            "The image could not be processed: upload a PNG, JPEG, WebP or BMP image of a digit.",
            "unreadable_image",
        ) from exc
    return image, fmt


@dataclass
class Computed:
    """The CPU part of a prediction request: answers to send and the records to log."""

    results: list[dict[str, Any]]
    processed_b64: str
    records: list[Any]  # PredictionRecord per result, or None when the record could not be built


def compute_predictions(
    ctx: AppContext,
    data: bytes,
    models: list[LoadedModel],
    *,
    true_digit: int | None = None,
    pen_color: str | None = None,
    background_color: str | None = None,
    session_id: str | None = None,
    source: str = "api",
) -> Computed:
    """Decode and preprocess once, run each model, build the records (CPU only, no I/O)."""
    from digitlab.preprocess import to_png

    started = time.perf_counter()
    image, fmt = preprocess(ctx, data, pen_color=pen_color, background_color=background_color)
    pre_seconds = time.perf_counter() - started
    processed_png = to_png(image)
    processed_b64 = base64.b64encode(processed_png).decode("ascii")
    try:
        input_png = stored_input_png(data, fmt)
    except Exception as exc:  # noqa: BLE001
        # never lose the answer over the stored copy
        log.warning("could not convert the %s upload to PNG for the store: %s", fmt, exc)
        input_png = None
    X = image.reshape(1, 784)
    m = ctx.metrics
    out = Computed([], processed_b64, [])
    detector = ctx.detector
    p_not_digit = detector.not_digit_probability(image) if detector is not None else None
    for model in models:
        t0 = time.perf_counter()
        proba = model.predict_proba(X)[0]
        seconds = pre_seconds + (time.perf_counter() - t0)
        digit = int(np.argmax(proba))
        confidence = float(proba[digit])
        probabilities = [float(p) for p in proba]
        if detector is not None:
            uncertain = bool(detector.is_uncertain(model.name, image, proba, p_not_digit=p_not_digit))
        else:
            uncertain = confidence < UNCERTAIN_BELOW
        latency_ms = round(seconds * 1000.0, 3)
        m.predictions.labels(model.name, str(digit)).inc()
        m.prediction_seconds.labels(model.name).observe(seconds)
        if uncertain:
            m.uncertain.labels(model.name).inc()
        record = make_record(
            model,
            digit,
            probabilities,
            drawn_digit=true_digit,
            pen_color=pen_color,
            background_color=background_color,
            image_png=input_png,
            processed_png=processed_png,
            latency_ms=latency_ms,
            session_id=session_id,
            source=source,
        )
        out.records.append(record)
        out.results.append(
            {
                "id": None,
                "uid": record.uid if record is not None else uuid.uuid4().hex,
                "model": model.name,
                "model_version": str(model.version),
                "digit": digit,
                "confidence": confidence,
                "probabilities": probabilities,
                "uncertain": uncertain,
                "processed_image": processed_b64,
                "latency_ms": latency_ms,
                "logged": False,
            }
        )
    return out


def make_record(model: LoadedModel, digit: int, probabilities: list[float], **fields):
    """A PredictionRecord, or None when it cannot be built (e.g. non-finite probabilities)."""
    from digitlab.store import PredictionRecord

    try:
        return PredictionRecord(
            model_name=model.name,
            model_version=str(model.version),
            predicted_digit=digit,
            probabilities=probabilities,
            **fields,
        )
    except Exception as exc:  # noqa: BLE001
        log.error("prediction of %s will not be logged: the record was refused (%s)", model.name, exc)
        return None


def log_predictions(ctx: AppContext, computed: Computed) -> None:
    """Hand the records to the store (one transaction) and fill in `id` and `logged`, waiting for it."""
    log_predictions_async(ctx, computed).result()


def log_predictions_async(ctx: AppContext, computed: Computed) -> Future:
    """Hand the records to the store at once; the returned Future is done when `id` and `logged` are
    filled in. It never fails: a store failure leaves `logged: false` and counts in
    `digitlab_store_write_failures_total`. (The route awaits it on the event loop: no thread waits.)"""
    done: Future = Future()
    pairs = list(zip(computed.results, computed.records, strict=True))
    valid = [(result, record) for result, record in pairs if record is not None] if ctx.store else []
    ctx.metrics.store_failures.inc(len(pairs) - len(valid))  # no store, or a record that was refused
    if not valid:
        done.set_result(None)
        return done

    def settle(stored: Future) -> None:
        try:
            added_all = stored.result()
        except Exception as exc:  # noqa: BLE001
            log.error("%d prediction(s) not logged: %s: %s", len(valid), type(exc).__name__, exc)
            ctx.metrics.store_failures.inc(len(valid))
        else:
            for (result, _), added in zip(valid, added_all, strict=True):
                ctx.metrics.logged.labels(added.stored).inc()
                result["id"] = added.id
                result["uid"] = added.uid
                result["logged"] = True
        finally:
            _settled(done)

    try:
        ctx.store.add_many_async([record for _, record in valid]).add_done_callback(settle)
    except Exception as exc:  # noqa: BLE001 - e.g. the spool could not be written
        log.error("%d prediction(s) not logged: %s: %s", len(valid), type(exc).__name__, exc)
        ctx.metrics.store_failures.inc(len(valid))
        _settled(done)
    return done


def _settled(done: Future) -> None:
    """Mark `done`, unless its waiter already gave up (a client that went away cancels it)."""
    try:
        done.set_result(None)
    except InvalidStateError:
        pass


def run_prediction(
    ctx: AppContext, data: bytes, models: list[LoadedModel], **options
) -> tuple[list[dict], str]:
    """Both steps in the calling thread (scripts and tests); the route runs them in separate pools."""
    computed = compute_predictions(ctx, data, models, **options)
    log_predictions(ctx, computed)
    return computed.results, computed.processed_b64


# --------------------------------------------------------------------------------------------------
# model files appearing or changing while the API runs


def manifest_key(name: str, model_dir: Path) -> tuple[str, float] | None:
    for directory in model_dirs_for(name, model_dir):
        path = directory / f"{name}.json"
        try:
            return str(path), path.stat().st_mtime
        except OSError:
            continue
    return None


def refresh_models(ctx: AppContext) -> None:
    """(Re)load a model whose manifest appeared or changed since the last look; a broken artefact is
    tried once per manifest change, not every few seconds. Loaded models are swapped atomically."""
    for name in MODEL_SPECS:
        if is_training(name, ctx.settings.model_dir):
            continue  # wait for the finished files
        key = manifest_key(name, ctx.settings.model_dir)
        if key is None or key == ctx.manifest_keys.get(name):
            continue
        ctx.manifest_keys[name] = key
        before = ctx.registry.get(name)
        ctx.registry.refresh(name)
        after = ctx.registry.get(name)
        if after is not None and after is not before:
            log.info("model %s %s (version %s)", name, "reloaded" if before else "loaded", after.version)


def refresh_gauges(ctx: AppContext) -> str:
    """This worker's model-readiness, database and spool gauges; returns "ok" | "unavailable" for the
    database. Set at every scrape and every MODEL_REFRESH_SECONDS, so that with several workers the
    combined values are at most that old."""
    m = ctx.metrics
    for name, state in ctx.registry.status().items():
        m.model_ready.labels(name).set(1 if state == "ready" else 0)
    database = "unavailable"
    if ctx.store is not None:
        try:
            state = ctx.store.health()
        except Exception as exc:  # noqa: BLE001 - a failing health check means "down", never a failing scrape
            log.warning("database health check failed: %s: %s", type(exc).__name__, exc)
        else:
            m.spool_pending.set(state["spool"])
            database = state["database"]
    m.database_up.set(1 if database == "ok" else 0)
    return database


def sample_drawing(size: int = 280) -> bytes:
    """A drawn '7' as a PNG (dark pen on white, like the UI's canvas): warm-up, tests and the benchmark."""
    from PIL import Image, ImageDraw

    k = size / 280
    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).line(
        [(80 * k, 62 * k), (196 * k, 58 * k), (150 * k, 140 * k), (118 * k, 226 * k)],
        fill="#1f2340",
        width=max(1, round(18 * k)),
        joint="curve",
    )
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def warm_up(ctx: AppContext) -> None:
    """One prediction per loaded model (not logged), so the first real request is not the slow one."""
    from digitlab.preprocess import to_mnist, to_png

    try:
        image = to_mnist(sample_drawing())
        to_png(image)
        for name in ctx.registry.ready_names():
            ctx.registry.get(name).predict_proba(image.reshape(1, 784))
        if ctx.detector is not None:
            ctx.detector.not_digit_probability(image)
    except Exception as exc:  # noqa: BLE001
        # a warm-up problem must not stop the server; real requests will report it
        log.warning("warm-up failed: %s: %s", type(exc).__name__, exc)
