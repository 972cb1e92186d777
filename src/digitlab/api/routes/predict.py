"""`POST /api/v1/predict`: an image (multipart file field `image`, or base64 in JSON) -> the digit."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from digitlab.api.deps import FastJSONResponse, get_ctx, refuse_repeated_members, utf8_json
from digitlab.api.errors import ApiError, describe_validation_errors, error_responses
from digitlab.api.metrics import MODEL_SCOPE_KEY
from digitlab.api.multipart import MAX_FIELDS, MAX_FILES, NotText, Part, boundary_of, parse_plain_form
from digitlab.api.prediction import Job, resolve_models
from digitlab.api.schemas import (
    SESSION_ID_MAX,
    ImageOptions,
    MultiPredictionResult,
    PredictForm,
    PredictionResult,
    PredictJSON,
    PredictOptions,
    clean_form_value,
    drawing_key,
    form_digit,
)

router = APIRouter(prefix="/api/v1", tags=["predict"])



def image_request_body(form_model: type[BaseModel], json_model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an image route: a multipart form or JSON with the image in base64.

    The form's optional fields show empty in /docs' "Try it out": Swagger UI filled them with made-up values
    (`model=string`, `true_digit=9`), so a first try stored a false label."""
    form = form_model.model_json_schema()
    for name, prop in form["properties"].items():
        if name != "image" and "default" in prop:
            prop["example"] = prop["default"] if prop["default"] is not None else ""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": form,
                "encoding": {"image": {"contentType": "image/png, image/jpeg, image/webp, image/bmp"}},
            },
            "application/json": {"schema": json_model.model_json_schema()},
        },
    }


_REQUEST_BODY = image_request_body(PredictForm, PredictJSON)


#: an image part sent without a file name (a text field)
IMAGE_NOT_A_FILE = ("Invalid request: 'image' must be a file field (a part whose Content-Disposition has a "
                    'filename="..."), not a text field.')


def _invalid(message: str) -> ApiError:
    return ApiError(message, "invalid_fields")


async def _from_multipart(request: Request, options_model: type[ImageOptions]) -> tuple[bytes, Any]:
    body = await request.body()  # already in memory (BodyLimitMiddleware); request.form() reuses it
    if not body.strip():  # (it was told its parts do not use the boundary its header names)
        raise ApiError("The request has no body: send the form (multipart/form-data) with a file field named 'image'.",
                       "malformed_body")  # fmt: skip
    try:
        parts = parse_plain_form(request.headers.get("content-type", ""), body)
    except NotText as exc:  # (an image sent as a text field, its bytes no text: "'image' is not UTF-8 text")
        raise _invalid(IMAGE_NOT_A_FILE if str(exc) == "image" else
                       f"Invalid request: the field '{str(exc)[:40]}' is not UTF-8 text.") from None  # fmt: skip
    if parts is None:  # not the plain shape: Starlette's parser decides, with its own errors
        boundary = boundary_of(request.headers.get("content-type", ""))
        if boundary is not None and b"--" + boundary not in body:  # (said "a cut-off upload?", misleading)
            raise ApiError(
                "The multipart body does not use the boundary its Content-Type header names: send the form as "
                "your HTTP library builds it (its parts separated by that boundary).",
                "malformed_body",
            )
        if boundary is not None and b"--" + boundary + b"--" not in body:  # its parser keeps what came
            raise ApiError(  # before the cut and drops the rest: "'image' is required" would mislead
                "The multipart body ends before its closing boundary (a cut-off upload?): send the whole form.",
                "malformed_body",
            )
        parts = await _parts_from_starlette(request, {"image", *options_model.model_fields})
    image = parts.get("image")
    if image is None:
        raise _invalid("Invalid request: 'image' is required (a file field with the PNG, JPEG, WebP or BMP).")
    if not image.is_file:
        raise _invalid(IMAGE_NOT_A_FILE)
    values: dict[str, Any] = {}
    for name in options_model.model_fields:
        part = parts.get(name)
        if part is None:
            continue
        if part.is_file:
            raise _invalid(f"Invalid request: '{name}' must be a text field, not a file.")
        value = clean_form_value(part.value)
        if value is not None:
            values[name] = form_digit(value) if name == "true_digit" else value
    try:
        options = options_model.model_validate(values)
    except ValidationError as exc:
        raise _invalid(describe_validation_errors(exc.errors())) from None
    return image.value, options


async def _parts_from_starlette(request: Request, known: set[str]) -> dict[str, Part]:
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)
    except Exception as exc:  # starlette answers a broken multipart body with HTTPException(400)
        detail = str(getattr(exc, "detail", "") or exc)
        if detail.startswith("Too many"):  # a well-formed form over the limits ("could not be parsed" misled)
            raise ApiError(f"{detail.rstrip('.')}: send the image and the few fields of the API only.",
                           "malformed_body") from exc  # fmt: skip
        if detail.startswith("Part exceeded"):  # a text field over 1 MB (a 2 MB session_id)
            raise _invalid("Invalid request: a text field is over 1 MB; the API's text fields are short (a "
                           f"session_id of at most {SESSION_ID_MAX} characters, a colour, a model name).") from exc  # fmt: skip
        raise ApiError(
            "The multipart body could not be parsed: send a form with a file field named 'image'.",
            "malformed_body",
        ) from exc
    try:
        parts = {}
        for name, value in form.multi_items():
            if name in parts and name in known:  # `true_digit=7` and `true_digit=3` stored 3: which one was meant?
                raise _invalid(f"Invalid request: '{name[:40]}' was sent more than once: send each field once.")
            if isinstance(value, UploadFile):
                parts[name] = Part(True, await value.read() if name == "image" else b"")
            else:
                parts[name] = Part(False, value)
        return parts
    finally:
        await form.close()


def _loads(body: bytes) -> Any:
    """orjson first (fast); what it refuses goes to the standard parser, which reads a number past a double's
    range (`1e400`, valid JSON) as the feedback routes do, so its field's check names it (it was "not valid
    JSON"). NaN and Infinity stay refused: they are not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body, parse_constant=_not_json)
        except RecursionError:
            raise _invalid("Invalid request: the JSON body is nested too deeply.") from None
        except ValueError as exc:  # (Python's own limit on an integer's digits: valid JSON, no field's value)
            if "integer string conversion" in str(exc):
                raise _invalid("Invalid request: a number in the JSON body has too many digits.") from None
            raise


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_base64_image(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace ignored; a `data:...;base64,` prefix is fine."""
    if text[:5].lower() == "data:":  # (a URL scheme is case-insensitive: "DATA:IMAGE/PNG;BASE64,")
        header, _, text = text.partition(",")
        if ";base64" not in header.lower():
            raise _invalid("Invalid request: 'image' must be base64 (a data: URL needs ';base64').")
    text = "".join(text.split()).translate(_URLSAFE_TO_STANDARD)
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Invalid request: 'image' is not valid base64.") from None


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


async def _from_json(request: Request, json_model: type[ImageOptions]) -> tuple[bytes, Any]:
    body = utf8_json(await request.body())  # (a UTF-8 byte order mark, which RFC 8259 lets a parser ignore, goes)
    if not body.strip():  # ("not valid JSON" said nothing of what was wrong)
        raise _invalid("Invalid request: the body is empty: send a JSON object with the image in base64 as 'image'.")
    try:
        payload = _loads(body)
    except ValueError:
        raise _invalid("Invalid request: the body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise _invalid("Invalid request: the body must be a JSON object with an 'image' member.")
    refuse_repeated_members(body, len(payload))  # (orjson keeps the last of two silently)
    try:
        options = json_model.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(describe_validation_errors(exc.errors())) from None
    return decode_base64_image(options.image), options


async def parse_image_request(
    request: Request, options_model: type[ImageOptions], json_model: type[ImageOptions]
) -> tuple[bytes, Any]:
    """(image bytes, validated options) from a multipart or JSON body; `ApiError` (4xx) otherwise."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _from_multipart(request, options_model)
    if media_type == "application/json" or media_type.endswith("+json"):
        return await _from_json(request, json_model)
    raise ApiError(
        "Send multipart/form-data with a file field 'image', or JSON with the image in base64.",
        "unsupported_media_type",
    )


@router.post(
    "/predict",
    response_class=FastJSONResponse,
    response_model=PredictionResult | MultiPredictionResult,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {"description": "The prediction (or, with `model=all`, one per ready model)"},
        **error_responses(400, 404, 413, 415, 422, 503),
    },
)
async def predict(request: Request) -> FastJSONResponse:
    """Recognise the digit in an image.

    Send `multipart/form-data` with a file field `image` (PNG, JPEG, WebP or BMP; the type is decided
    from the bytes) and optional fields `model` (a name, or `all`), `true_digit`, `pen_color`,
    `background_color`, `session_id`, `source`; or the same as JSON with `image` in base64.
    """
    ctx = get_ctx(request)
    data, options = await parse_image_request(request, PredictOptions, PredictJSON)
    models = resolve_models(ctx, options.model)
    request.scope[MODEL_SCOPE_KEY] = "all" if options.model == "all" else models[0].name

    job = Job(
        data,
        models,
        true_digit=options.true_digit,
        pen_color=options.pen_color,
        background_color=options.background_color,
        session_id=options.session_id,
        source=options.source,
        drawing_id=drawing_key(options.session_id, options.drawing_id),
    )
    computed = await ctx.batcher.predict(job)  # CPU work in a worker thread, with concurrent requests
    results, processed = computed.results, computed.processed_b64
    if options.model == "all":
        return FastJSONResponse({"predictions": results, "processed_image": processed})
    return FastJSONResponse(results[0])
