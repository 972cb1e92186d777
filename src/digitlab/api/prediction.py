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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from digitlab.api.context import AppContext
from digitlab.decode import EmptyImageError, pil_to_rgba, png_picture_only
from digitlab.errors import DigitlabError, ModelNotReadyError, UnknownModelError
from digitlab.models.registry import MODEL_SPECS, LoadedModel, is_training
from digitlab.preprocess import (
    BUSY_MSG,
    ImageTooLargeError,
    UnreadableImageError,
    shows_a_scene,
    sniff_format,
    to_mnist,
    to_png,
    working_rgba,
)
from digitlab.segment_ink import photo_ink

log = logging.getLogger("digitlab.api")

#: Without the not-a-digit detector, a prediction below this confidence is flagged `uncertain`.
UNCERTAIN_BELOW = 0.5
#: Non-PNG uploads (and PNGs over STORED_PNG_MAX_BYTES) are stored as a PNG no larger than this on the long side.
STORED_INPUT_MAX_SIDE = 512
STORED_PNG_MAX_BYTES = 256 * 1024


# --------------------------------------------------------------------------------------------------
# choosing models


def resolve_models(ctx: AppContext, requested: str | None, *, allow_all: bool = True) -> list[LoadedModel]:
    """The model(s) a request asks for; `UnknownModelError` or `ModelNotReadyError` otherwise. `allow_all`:
    whether 'all' is a choice (it is named in the unknown-model message only then)."""
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
        choices = ", ".join(MODEL_SPECS) + (", or 'all'" if allow_all else "")
        raise UnknownModelError(f"Unknown model {shown!r}: choose one of {choices}.")
    if is_training(requested, ctx.settings.model_dir):
        raise ModelNotReadyError(f"Model {requested!r} is training: try again when it is ready.")
    if registry.errors().get(requested):
        raise ModelNotReadyError(f"Model {requested!r} could not be loaded: run `digitlab train {requested}`.")
    raise ModelNotReadyError(f"Model {requested!r} is not trained: run `digitlab train {requested}`.")


# --------------------------------------------------------------------------------------------------
# the prediction


def stored_input_png(data: bytes, fmt: str) -> bytes:
    """PNG uploads are stored with only the chunks of their picture (`png_picture_only`) when that is at
    most STORED_PNG_MAX_BYTES (a canvas drawing: 3-40 KB); other formats, larger PNGs and a PNG whose chunks
    cannot be walked, as a PNG of at most STORED_INPUT_MAX_SIDE px (a 6 MB PNG of noise was stored whole,
    once per model answering)."""
    if fmt == "png":
        picture = png_picture_only(data)
        if picture is not None and len(picture) <= STORED_PNG_MAX_BYTES:
            return picture
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("RGB", (STORED_INPUT_MAX_SIDE, STORED_INPUT_MAX_SIDE))
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "RGBA", "L", "LA"):  # as the model saw it: 16-bit grey scaled (`convert`
            im = Image.fromarray(pil_to_rgba(im), "RGBA")  # clipped it: a 16-bit scan was stored all white)
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


def preprocess(
    ctx: AppContext, data: bytes, *, pen_color: str | None, background_color: str | None, source: str = "api"
):  # fmt: skip
    """bytes -> (28x28 float32, format). Only 4xx errors leave this function for a bad image. A JPEG, any
    picture uploaded as a photo or scan (`source` "upload": a PNG of a sheet turned 6 degrees on a desk kept
    the sheet's edge as ink, a 2 read 0, while the Number page read it right), and any other picture that
    `shows_a_scene` (a PNG photo beside a shadow's edge: a sure 1) is read as paper first. Without colour hints."""
    fmt = sniff_format(data)
    with image_errors(fmt):
        hints = pen_color is not None or background_color is not None
        as_photo = (fmt == "jpeg" or source == "upload") and not hints
        if as_photo:
            image = _from_photo(data, ctx.settings.max_image_pixels)
            if image is not None:
                return image, fmt
        rgba = working_rgba(data, ctx.settings.max_image_pixels)  # decoded once, for both below
        if not as_photo and not hints and shows_a_scene(rgba):
            as_photo = True
            image = _from_photo(data, ctx.settings.max_image_pixels)
            if image is not None:
                return image, fmt
        try:
            image = to_mnist(rgba, pen_color=pen_color, background_color=background_color)
        except EmptyImageError as exc:
            if str(exc) != BUSY_MSG or pen_color is not None or as_photo:  # (read as paper above already)
                raise
            image = _from_photo(data, ctx.settings.max_image_pixels)
            if image is None:
                raise
    return image, fmt


def _from_photo(data: bytes, max_pixels: int) -> np.ndarray | None:
    """A photo of writing on paper, read as `/read` reads photos (flattened against its own light, ruled lines
    and the scene around the sheet left out); None for any other picture. Every JPEG is tried here first: the
    colour distance took everything unlike the border for ink, so a digit on a turned notebook page, a sheet on
    a desk, a shadow's edge or a finger at a corner were read as 0, 1 or 8 whatever was written. Other pictures
    come here only when the colour distance found them "busy all over" (a sheet turned a little on a dark
    table, in a shadow: a 7 filling the photo was refused), so every canvas is preprocessed exactly as before.
    The price: ~60-100 ms for a phone photo, ~1.8x that since the paper is estimated two ways (session 29: a soft
    shadow was read as a 1); the colour distance took 3-4 ms; a 400 px working size, 3x cheaper, loses a turned
    notebook page's thin lines."""
    try:
        ink = photo_ink(data, max_pixels=max_pixels)
    except EmptyImageError:  # paper and nothing on it: the colour distance took its shading for a 0
        raise EmptyImageError("Nothing drawn: the photo shows no ink. Write a digit and try again.") from None
    try:
        return None if ink is None else to_mnist(ink)
    except EmptyImageError:
        return None


@dataclass
class Computed:
    """The CPU part of a prediction request: answers to send and the records to log."""

    results: list[dict[str, Any]]
    processed_b64: str
    records: list[Any]  # PredictionRecord per result, or None when the record could not be built


@dataclass
class Job:
    """One prediction request: the image, the models that answer it and the fields of its records."""

    data: bytes
    models: list[LoadedModel]
    true_digit: int | None = None
    pen_color: str | None = None
    background_color: str | None = None
    session_id: str | None = None
    source: str = "api"
    drawing_id: str | None = None
    #: when the request arrived, its records' time: of two strokes of a drawing in flight at once, the one sent
    #: later wins (the one answered later won: an earlier, partial picture stayed stored)
    received: datetime = field(default_factory=lambda: datetime.now(UTC))


def compute_predictions(ctx: AppContext, data: bytes, models: list[LoadedModel], **fields) -> Computed:
    """Decode and preprocess once, run each model, build the records (CPU only, no I/O)."""
    outcome = compute_batch(ctx, [Job(data, models, **fields)])[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def compute_batch(ctx: AppContext, jobs: list[Job]) -> list[Computed | BaseException]:
    """Predictions for several requests at once (the predict route's micro-batches): each image is
    preprocessed on its own, then every model answers all the images that asked for it in one call.

    A request's bad image fails that request only (its outcome is the exception). The answers equal
    one-by-one predictions (batched model arithmetic may differ in the last float bits, < 1e-6).
    """
    outcomes: list[Computed | BaseException | None] = [None] * len(jobs)
    images: dict[int, np.ndarray] = {}
    formats: dict[int, str] = {}
    pre_seconds: dict[int, float] = {}
    for i, job in enumerate(jobs):
        started = time.perf_counter()
        try:
            images[i], formats[i] = preprocess(
                ctx, job.data, pen_color=job.pen_color, background_color=job.background_color, source=job.source
            )
        except Exception as exc:  # noqa: BLE001 - a DigitlabError (4xx) for a bad image; the request gets it
            outcomes[i] = exc
            continue
        pre_seconds[i] = time.perf_counter() - started

    # every model once, on the images of the requests that asked for it
    answers: dict[tuple[int, str], tuple[np.ndarray, float, np.ndarray | None, np.ndarray | None]] = {}
    by_model: dict[str, tuple[LoadedModel, list[int]]] = {}
    for i in images:
        for model in jobs[i].models:
            by_model.setdefault(model.name, (model, []))[1].append(i)
    for model, members in by_model.values():
        started = time.perf_counter()
        try:
            proba, own, alone = model.predict_opinions(np.stack([images[i].reshape(784) for i in members]))
        except Exception as exc:  # noqa: BLE001 - the requests that asked for this model fail
            for i in members:
                outcomes[i] = exc
            continue
        seconds = time.perf_counter() - started
        for row, i in enumerate(members):
            answers[(i, model.name)] = (
                proba[row], seconds, None if own is None else own[row], None if alone is None else alone[row]
            )

    answered = [i for i in images if outcomes[i] is None]
    not_digit = _not_digit_probabilities(ctx, jobs, images, answered, answers)
    for i in answered:
        probas = [(model, *answers[(i, model.name)]) for model in jobs[i].models]
        outcomes[i] = _answer(ctx, jobs[i], images[i], formats[i], pre_seconds[i], probas, not_digit.get(i))
    return outcomes  # type: ignore[return-value]


def _not_digit_probabilities(ctx: AppContext, jobs, images, answered, answers) -> dict[int, Any]:
    """The detector's p(not a digit) of the images whose flag depends on it, in one batch."""
    detector = ctx.detector
    if detector is None:
        return {}
    needed = [
        i
        for i in answered
        if any(detector.needs_detector(m.name, answers[(i, m.name)][0]) for m in jobs[i].models)
    ]
    if not needed:
        return {}
    cnn_opinion = [
        any(detector.asks_cnn(m.name) and detector.opinion_can_flag(m.name, answers[(i, m.name)][0])
            for m in jobs[i].models)
        for i in needed
    ]  # fmt: skip
    found = detector.not_digit_each(np.stack([images[i].reshape(784) for i in needed]), np.array(cnn_opinion))
    return dict(zip(needed, found, strict=True))  # each carries the detector's digit outputs (and the CNN's) too


def _answer(
    ctx: AppContext,
    job: Job,
    image: np.ndarray,
    fmt: str,
    pre_seconds: float,
    probas: list,
    p_not_digit: float | None,
) -> Computed:
    """Results and records of one request from (model, probabilities, model seconds, its own opinion, its
    answer before it asked its partner) of its models and the detector's answer (None when no model's flag
    needs it)."""
    processed_png = to_png(image)
    processed_b64 = base64.b64encode(processed_png).decode("ascii")
    try:
        input_png = stored_input_png(job.data, fmt)
    except Exception as exc:  # noqa: BLE001
        # never lose the answer over the stored copy
        log.warning("could not convert the %s upload to PNG for the store: %s", fmt, exc)
        input_png = None
    m = ctx.metrics
    out = Computed([], processed_b64, [])
    detector = ctx.detector
    for model, proba, model_seconds, own, alone in probas:
        seconds = pre_seconds + model_seconds
        digit = int(np.argmax(proba))
        confidence = float(proba[digit])
        probabilities = [float(p) for p in proba]
        if detector is None:
            uncertain = confidence < UNCERTAIN_BELOW
        else:
            uncertain = detector.is_uncertain(
                model.name, image, proba, p_not_digit=p_not_digit, own_opinion=own, alone=alone
            )
        latency_ms = round(seconds * 1000.0, 3)
        m.prediction_seconds.labels(model.name).observe(seconds)
        if m.first_answer(job.drawing_id, model.name):
            m.predictions.labels(model.name, str(digit)).inc()
            if uncertain:
                m.uncertain.labels(model.name).inc()
        else:
            m.drawing_updates.labels(model.name).inc()
        record = make_record(
            model,
            digit,
            probabilities,
            drawn_digit=job.true_digit,
            pen_color=job.pen_color,
            background_color=job.background_color,
            image_png=input_png,
            processed_png=processed_png,
            latency_ms=latency_ms,
            session_id=job.session_id,
            source=job.source,
            drawing_id=job.drawing_id,
            uncertain=uncertain,
            timestamp=job.received,
        )
        out.records.append(record)
        out.results.append(
            {
                "id": None,
                "uid": record.uid if record is not None else uuid.uuid4().hex,
                "model": model.name,
                "model_version": model.answer_version,
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
            model_version=model.answer_version,
            predicted_digit=digit,
            probabilities=probabilities,
            **fields,
        )
    except Exception as exc:  # noqa: BLE001
        log.error("prediction of %s will not be logged: the record was refused (%s)", model.name, exc)
        return None


# --------------------------------------------------------------------------------------------------
# model files appearing or changing while the API runs


