"""The prediction itself, free of HTTP: which models, bytes -> 28x28 -> probabilities -> records.

Plain synchronous CPU work (the predict route runs it in one worker thread). Bad input and models that
cannot answer raise `DigitlabError`s with a stable code; `api/errors.py` maps codes to HTTP statuses.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitlab.api.context import AppContext
from digitlab.errors import DigitlabError, ModelNotReadyError, UnknownModelError
from digitlab.models.registry import MODEL_SPECS, LoadedModel, is_training
from digitlab.preprocess import ImageTooLargeError, UnreadableImageError, sniff_format, to_mnist, to_png

log = logging.getLogger("digitlab.api")

#: Without the not-a-digit detector, a prediction below this confidence is flagged `uncertain`.
UNCERTAIN_BELOW = 0.5
#: Non-PNG uploads are stored as a PNG no larger than this on the long side.
STORED_INPUT_MAX_SIDE = 512


# --------------------------------------------------------------------------------------------------
# choosing models


def resolve_models(ctx: AppContext, requested: str | None) -> list[LoadedModel]:
    """The model(s) a request asks for; `UnknownModelError` or `ModelNotReadyError` otherwise."""
    registry = ctx.registry
    if requested is None:
        name = registry.default_name(ctx.settings.default_model)
        if name is None:
            raise ModelNotReadyError(
                "No model is ready yet: train one with `digitlab train` (or wait for training to finish)."
            )
        return [registry.get(name)]
    if requested == "all":
        names = registry.ready_names()
        if not names:
            raise ModelNotReadyError("No model is ready yet: train one with `digitlab train`.")
        return [registry.get(n) for n in names]
    model = registry.get(requested)
    if model is not None:
        return [model]
    if requested not in MODEL_SPECS:
        shown = requested if len(requested) <= 40 else requested[:40] + "..."
        raise UnknownModelError(f"Unknown model {shown!r}: choose one of {', '.join(MODEL_SPECS)}, or 'all'.")
    if is_training(requested, ctx.settings.model_dir):
        raise ModelNotReadyError(f"Model {requested!r} is training: try again when it is ready.")
    if registry.errors().get(requested):
        raise ModelNotReadyError(f"Model {requested!r} could not be loaded: run `digitlab train {requested}`.")
    raise ModelNotReadyError(f"Model {requested!r} is not trained: run `digitlab train {requested}`.")


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


@contextlib.contextmanager
def image_errors(fmt: str) -> Iterator[None]:
    """Turns anything an image's processing raises into a 4xx `DigitlabError` (never a 500)."""
    try:
        yield
    except DigitlabError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise ImageTooLargeError("The image is too large to process: upload a smaller image.") from exc
    except Exception as exc:  # a decoder choking on a damaged file; logged so a real bug stays visible
        log.warning("preprocessing a %s upload failed (%s: %s)", fmt, type(exc).__name__, exc, exc_info=True)
        raise UnreadableImageError(
            "The image could not be processed: upload a PNG, JPEG, WebP or BMP image of a digit."
        ) from exc


def preprocess(ctx: AppContext, data: bytes, *, pen_color: str | None, background_color: str | None):
    """bytes -> (28x28 float32, format). Only 4xx errors leave this function for a bad image."""
    fmt = sniff_format(data)
    with image_errors(fmt):
        image = to_mnist(
            data,
            pen_color=pen_color,
            background_color=background_color,
            max_pixels=ctx.settings.max_image_pixels,
        )
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
    drawing_id: str | None = None,
) -> Computed:
    """Decode and preprocess once, run each model, build the records (CPU only, no I/O)."""
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
        m.prediction_seconds.labels(model.name).observe(seconds)
        if m.first_answer(drawing_id, model.name):
            m.predictions.labels(model.name, str(digit)).inc()
            if uncertain:
                m.uncertain.labels(model.name).inc()
        else:
            m.drawing_updates.labels(model.name).inc()
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
            drawing_id=drawing_id,
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


# --------------------------------------------------------------------------------------------------
# model files appearing or changing while the API runs


