"""`POST /api/v1/read`: an image of a written number -> its digits, left to right, with boxes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import anyio
from fastapi import APIRouter, Request, Response

from digitlab.api.deps import FastJSONResponse, get_ctx
from digitlab.api.errors import ApiError, error_responses
from digitlab.api.metrics import CLIENT_CLOSED, MODEL_SCOPE_KEY
from digitlab.api.prediction import resolve_models
from digitlab.api.reading import compute_reading
from digitlab.api.routes.predict import image_request_body, parse_image_request
from digitlab.api.schemas import ReadForm, ReadJSON, ReadOptions, ReadResult, drawing_key
from digitlab.store.numbers import NumberRecord

log = logging.getLogger("digitlab.api")

router = APIRouter(prefix="/api/v1", tags=["read"])

_REQUEST_BODY = image_request_body(ReadForm, ReadJSON)


@router.post(
    "/read",
    response_class=FastJSONResponse,
    response_model=ReadResult,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={200: {"description": "The number read"}, **error_responses(400, 404, 413, 415, 422, 503)},
)
async def read(request: Request) -> FastJSONResponse:
    """Read a written number (a year, a price, a PIN): its digits left to right.

    Send `multipart/form-data` with a file field `image` (PNG, JPEG, WebP or BMP; the same limits as
    `/predict`) and optional fields `model`, `true_text` (the number written, digits only),
    `session_id`, `pen_color`, `background_color`, `source`; or the same as JSON with `image` in base64.
    Each digit comes with its box in the input image's pixels; marks that are no digits (a comma, a dot)
    are left out of `text` and listed in `dropped`. The reading is stored like a prediction: during a
    database outage it waits in the outage spool (`logged: true`, `id: null`; its `uid` takes feedback).
    """
    ctx = get_ctx(request)
    data, options = await parse_image_request(request, ReadOptions, ReadJSON)
    received = datetime.now(UTC)  # the record's time: of two strokes in flight, the one sent later wins
    if options.model == "all":
        raise ApiError("Invalid request: /read takes one model, not 'all'.", "invalid_fields")
    model = resolve_models(ctx, options.model, allow_all=False)[0]
    request.scope[MODEL_SCOPE_KEY] = model.name

    def compute():
        return compute_reading(
            ctx, data, model, pen_color=options.pen_color, background_color=options.background_color
        )

    async with ctx.cpu_limiter:  # a reading costs up to a second of CPU: none for a client that left meanwhile
        if await request.is_disconnected():
            return Response(status_code=CLIENT_CLOSED)  # (nobody to send it to: counted as 499)
        answer, _reading, input_png = await anyio.to_thread.run_sync(compute)
    if ctx.store is None:  # counted like a prediction that could not be stored (it was not counted at all)
        ctx.metrics.store_failures.inc()
        return FastJSONResponse(answer)
    try:
        record = number_record(answer, options, input_png, received)
        added = await anyio.to_thread.run_sync(ctx.store.add_number, record)
    except Exception as exc:  # noqa: BLE001 -- the reading is answered even when it cannot be stored
        log.error("read number not stored: %s", str(exc).splitlines()[0] if str(exc) else exc)
        ctx.metrics.store_failures.inc()  # and /health says "failing", as for predictions (a full disk lost
        ctx.store.note_write(False)  # 343 of 400 readings while /health said "ok": a probe, session 34)
    else:  # in the database (`id`), or in the outage spool (`id` null until it is replayed)
        if added.stored == "refused":  # the database will not take it (kept in rejected.jsonl): not stored
            ctx.metrics.store_failures.inc()
            return FastJSONResponse(answer)
        if added.stored == "database":
            ctx.store.note_write(True)
        answer.update(id=added.id, uid=added.uid, logged=True)
    return FastJSONResponse(answer)


def number_record(answer: dict, options: ReadOptions, input_png: bytes | None, received: datetime) -> NumberRecord:
    """The store's record of a `/read` answer (digits keep their box, probabilities and 28x28 PNG), timed when
    its request arrived."""
    return NumberRecord(
        model_name=answer["model"],
        model_version=answer["model_version"],
        text=answer["text"],
        confidence=answer["confidence"],
        uncertain=answer["uncertain"],
        digits=answer["digits"],
        true_text=options.true_text,
        latency_ms=answer["latency_ms"],
        session_id=options.session_id,
        source=options.source,
        drawing_id=drawing_key(options.session_id, options.drawing_id),
        image_png=input_png,
        timestamp=received,
    )
