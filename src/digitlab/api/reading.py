"""Reading a written number, free of HTTP: bytes -> `digitlab.segment` -> the `/read` answer.

Plain synchronous CPU work (the read route runs it in one worker thread); bad images raise the same
`DigitlabError`s as a prediction (`prediction.image_errors`).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from digitlab.api.context import AppContext
from digitlab.api.prediction import image_errors, stored_input_png
from digitlab.models.registry import LoadedModel
from digitlab.preprocess import sniff_format, to_png
from digitlab.segment import NumberReading, read_number


def compute_reading(
    ctx: AppContext,
    data: bytes,
    model: LoadedModel,
    *,
    pen_color: str | None = None,
    background_color: str | None = None,
) -> tuple[dict[str, Any], NumberReading, bytes | None]:
    """(the answer without `id` / `logged`, the reading, the input as PNG for the store or None). The model reads
    alone: a CNN that asks the SVM about the digits it doubts (`LoadedModel.partner`) gained nothing sure on
    numbers (calibration part +0.8, held out -1.0 point of whole numbers: docs/real.md), so they are read as before."""
    model = model.with_partner(None)
    started = time.perf_counter()
    fmt = sniff_format(data)
    with image_errors(fmt):
        reading = read_number(
            data,
            model,
            ctx.detector,
            verifier=ctx.segment_verifier,
            line_reader=ctx.line_reader,
            pen_color=pen_color,
            background_color=background_color,
            max_pixels=ctx.settings.max_image_pixels,
        )
    latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
    try:
        input_png = stored_input_png(data, fmt)
    except Exception:  # noqa: BLE001 -- never lose the answer over the stored copy
        input_png = None
    answer = {
        "id": None,
        "uid": None,
        "text": reading.text,
        "digits": [
            {
                "digit": d.digit,
                "confidence": d.confidence,
                "probabilities": d.probabilities,
                "box": list(d.box),
                "uncertain": d.uncertain,
                "processed_image": base64.b64encode(to_png(d.image28)).decode("ascii"),
            }
            for d in reading.digits
        ],
        "confidence": reading.confidence,
        "uncertain": reading.uncertain,
        "dropped": [list(b) for b in reading.dropped],
        "model": model.name,
        "model_version": str(model.version),
        "latency_ms": latency_ms,
        "logged": False,
    }
    return answer, reading, input_png
