"""History, feedback, images, stats, export and deletion: everything served from the prediction store.

Reading history, images and the export, and deleting, need the admin token when DIGITLAB_ADMIN_TOKEN is
set; feedback and stats stay open (like predicting). Store reads raise `DatabaseUnavailableError`
during an outage -> 503 `database_unavailable`; feedback is queued in the spool instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BeforeValidator
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import FileResponse, Response

from digitlab.api.context import AppContext
from digitlab.api.deps import Ctx, json_members_once, require_admin, store_or_503
from digitlab.api.errors import ApiError, answer_not_stored, error_responses
from digitlab.api.head import HEAD_FLAG
from digitlab.api.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    PredictionPage,
    StatsResponse,
)
from digitlab.store.records import NOT_A_DIGIT, StoredPrediction
from digitlab.store.repository import MAX_PAGE_SIZE

#: a text query parameter may hold anything but NUL (PostgreSQL text cannot: it was a 500)
NO_NUL = r"^[^\x00]*$"

router = APIRouter(prefix="/api/v1", tags=["predictions"])

MAX_ID = 2**31 - 1  # user_predictions.id is INTEGER (SERIAL on PostgreSQL)


def _plain_id(value: object) -> object:
    """An id in a path is written in ASCII digits only: pydantic's lax int read `1_0` as 10 and `+1` as 1,
    so a label sent to `/predictions/1_0/feedback` went to record 10."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with the digits 0-9 only")
    return value


PlainId = BeforeValidator(_plain_id)
PredictionId = Annotated[int, Path(ge=1, le=MAX_ID, description="The prediction's database id."), PlainId]
Uid = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{32}$", description="The `uid` of a prediction response.")]
ADMIN = [Depends(require_admin)]
PNG_RESPONSE = {
    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    "description": "PNG",
}
#: a picture's answers: the PNG, or 304 when `If-None-Match` names its ETag
PNG_RESPONSES = {200: PNG_RESPONSE, 304: {"description": "Not modified: the picture `If-None-Match` names (its ETag)"}}


def png_response(request: Request, png: bytes) -> Response:
    """A stored picture changes under its URL (each live stroke of a drawing, a deletion): caches ask each time
    (it was `max-age=3600`, an hour of the drawing's first stroke), and its ETag tells them whether it changed:
    304 with no body when it did not (the ETag was sent and `If-None-Match` ignored: an API probe, session 33)."""
    tag = f'"{hashlib.sha256(png).hexdigest()[:32]}"'
    headers = {"Cache-Control": "private, no-cache", "ETag": tag}
    asked = {t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")}
    if tag in asked or "*" in asked:
        return Response(status_code=304, headers=headers)
    return Response(png, media_type="image/png", headers=headers)


def _not_found(prediction_id: int | str) -> ApiError:
    return ApiError(f"There is no prediction {prediction_id}.", "prediction_not_found")


def _trimmed(value: object) -> object:
    """A filter's text without the spaces around it, and a blank one not given, as `?model=` already was (a probe,
    session 46: `?model=%20svm%20` matched nothing, `?since=` and `?correct=` were 422s)."""
    return (value.strip() or None) if isinstance(value, str) else value


#: the filters of a history page (`/predictions`, `/numbers`)
ModelFilter = Annotated[str | None, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),  # ("": none)
                        Query(max_length=64, pattern=NO_NUL, description="Only this model's answers.")]  # fmt: skip


def _true_or_false(value: object) -> object:
    """`true` or `false`, as documented (pydantic's lax bool also took yes, on, 1, t...)."""
    value = _trimmed(value)
    if isinstance(value, str) and value.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


CorrectFilter = Annotated[bool | None, BeforeValidator(_true_or_false),
                          Query(description="Only labelled answers that were right (true) or wrong (false).")]  # fmt: skip
#: a page number or size: ASCII digits only, as path ids (`page=1_0` was page 10)
PageNumber = Annotated[int, Query(ge=1, le=1_000_000, description="The page, from 1."), PlainId]

_ISO_DATE = re.compile(r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_time(value: object) -> object:
    """ISO 8601 only, as documented: pydantic also read a number as Unix time, seconds or milliseconds by
    its size (`until=99999999999`, meant as year 5138, was 1973; `since=1.5e10` the year 2445: an empty page,
    no error). ISO 8601 begins with the date."""
    value = _trimmed(value)
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be a date or time in ISO 8601, e.g. 2026-11-29 or 2026-11-29T14:30:00Z")
    if isinstance(value, str):  # an offset's "+" sent unencoded arrives as a space ("...T09:00:00 05:00"): it
        value = _UNENCODED_PLUS.sub(r"\1+\2", value)  # was "unexpected extra characters", with no hint why
        offset = _OFFSET.search(value)
        if offset and (int(offset["h"]) > 23 or int(offset["m"]) > 59):  # (+99:00 was "unexpected extra characters")
            raise ValueError(f"has the time zone offset {offset['offset']}: it must be between -23:59 and +23:59")
        _check_clock(value)
    return value


_CLOCK = re.compile(r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ](?P<time>(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?"
                    r"(?:[.,][0-9]+)?)\s*(?P<rest>.*?)\s*$")  # fmt: skip
_ZONE = re.compile(r"[Zz]|[+-][0-9]{2}:?[0-9]{2}")


def _check_clock(value: str) -> None:
    """Name what is wrong with a time: 24:00:00, 10:61 and an offset with seconds (+05:30:30) were all "unexpected
    extra characters at the end of the input" (pydantic, failing the time, read the value as a date; a probe)."""
    clock = _CLOCK.match(value)
    if clock is None:
        return
    if int(clock["h"]) > 23 or int(clock["m"]) > 59 or int(clock["s"] or 0) > 59:
        raise ValueError(f"has the time {clock['time']}: hours run from 00 to 23, minutes and seconds from 00 to 59")
    if clock["rest"] and not _ZONE.fullmatch(clock["rest"]):
        raise ValueError(f"has {clock['rest']!r} after the time {clock['time']}: a time zone is Z or an offset such as "
                         "+05:30")  # fmt: skip


_OFFSET = re.compile(r"T[0-9:.]+?\s*(?P<offset>[+-](?P<h>[0-9]{2}):?(?P<m>[0-9]{2}))\s*$")


_UNENCODED_PLUS = re.compile(r"^(\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+) ([0-9]{2}(?::?[0-9]{2})?\s*)$")


IsoTime = BeforeValidator(_iso_time)
SinceFilter = Annotated[datetime | None, IsoTime, Query(description="From this time (inclusive, ISO 8601).")]
UntilFilter = Annotated[datetime | None, IsoTime, Query(description="Before this time (exclusive, ISO 8601).")]


def query_utc(value: datetime | None, name: str) -> datetime | None:
    """Timezone-aware -> UTC here (the store compares naive UTC); refuse dates that overflow on the way."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(f"Invalid request: '{name}' is out of range.", "invalid_fields") from None


# --- feedback ------------------------------------------------------------------------------------------


def _feedback_answer(
    ctx: AppContext, store, prediction_id: int | None, uid: str | None, label: int
) -> FeedbackResponse:
    queued = False
    correct = None
    row = None
    try:
        row = store.get(prediction_id) if prediction_id is not None else store.labelled_by_uid(uid)
        if row is not None and label != NOT_A_DIGIT:
            correct = row.predicted_digit == label
        # no row: its record still waits in another process's spool, the label with it (store.pending)
        waiting = store.pending() > 0
        queued = row is None or waiting
        # ... unless none waits anywhere, or it had an id (only a stored row has one): it was deleted meanwhile
        # (a label racing an admin's DELETE was answered "queued in the spool", with nothing there)
        deleted = row is None and (prediction_id is not None or not (waiting or store.spool.siblings_pending()))
    except Exception:  # database unavailable: the feedback waits in the spool  # noqa: BLE001
        queued, deleted = True, False
    if deleted:
        raise _not_found(uid or prediction_id)
    return FeedbackResponse(
        id=prediction_id if prediction_id is not None else (row.id if row is not None else None),
        uid=uid if uid is not None else (row.uid if row is not None else None),
        true_digit=None if label == NOT_A_DIGIT else label,
        not_digit=label == NOT_A_DIGIT,
        correct=correct,
        stored="spool" if queued else "database",
        queued=queued,
    )


def _feedback(ctx: AppContext, body: FeedbackRequest, *, prediction_id: int | None = None, uid: str | None = None):
    store = store_or_503(ctx)
    label = NOT_A_DIGIT if body.not_digit else body.true_digit
    if uid is not None and uid in ctx.unlogged:  # it was answered "queued", then dropped with no record to label
        raise ApiError("That prediction was not stored (its answer said logged: false), so an answer to it cannot "
                       "be kept: draw it again once the service stores predictions.", "prediction_not_found")  # fmt: skip
    try:
        found = store.set_feedback(prediction_id, label) if uid is None else store.set_feedback_by_uid(uid, label)
    except (SQLAlchemyError, OSError) as exc:  # refused by the database, and the spool cannot take it (a full disk)
        raise answer_not_stored() from exc
    if not found:
        raise _not_found(uid or prediction_id)
    return _feedback_answer(ctx, store, prediction_id, uid, label)


@router.post(
    "/predictions/{prediction_id}/feedback",
    dependencies=[Depends(json_members_once)],
    response_model=FeedbackResponse,
    responses=error_responses(400, 404, 415, 422, 503),
)
def feedback(ctx: Ctx, prediction_id: PredictionId, body: FeedbackRequest):
    """Record what was really drawn (`true_digit`), or that it is no digit (`not_digit: true`): sets the
    stored `drawn_digit`, `correct` and `not_digit`. During a database outage the feedback is queued
    (`queued: true`) and applied when the database is back."""
    return _feedback(ctx, body, prediction_id=prediction_id)


@router.post(
    "/predictions/uid/{uid}/feedback",
    dependencies=[Depends(json_members_once)],
    response_model=FeedbackResponse,
    responses=error_responses(400, 404, 415, 422, 503),
)
def feedback_by_uid(ctx: Ctx, uid: Uid, body: FeedbackRequest):
    """The same by `uid`: works for a prediction answered with `id: null` (spooled during an outage)."""
    return _feedback(ctx, body, uid=uid.lower())


# --- history ---------------------------------------------------------------------------------------------


@router.get(
    "/predictions",
    response_model=PredictionPage,
    dependencies=ADMIN,
    responses=error_responses(401, 422, 503),
)
def list_predictions(
    ctx: Ctx,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE), PlainId] = 50,
    model: ModelFilter = None,
    correct: CorrectFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
):
    """A page of logged predictions, newest first (no image bytes: see `.../{id}/image`)."""
    store = store_or_503(ctx)
    rows, total = store.list(
        page,
        page_size,
        model=model or None,
        correct=correct,
        since=query_utc(since, "since"),
        until=query_utc(until, "until"),
    )
    return PredictionPage(items=rows, total=total, page=page, page_size=page_size)


@router.get(
    "/predictions/{prediction_id}",
    response_model=StoredPrediction,
    dependencies=ADMIN,
    responses=error_responses(401, 404, 422, 503),
)
def get_prediction(ctx: Ctx, prediction_id: PredictionId):
    """One logged prediction (without image bytes)."""
    row = store_or_503(ctx).get(prediction_id)
    if row is None:
        raise _not_found(prediction_id)
    return row


@router.get(
    "/predictions/{prediction_id}/image",
    response_class=Response,
    dependencies=ADMIN,
    responses={**PNG_RESPONSES, **error_responses(401, 404, 422, 503)},
)
def get_image(
    prediction_id: PredictionId,
    ctx: Ctx,
    request: Request,
    kind: Annotated[
        Literal["input", "processed"],
        BeforeValidator(lambda v: _trimmed(v) or "input"),  # (blank was a 422 where every filter's is not given)
        Query(
            description="`input`: the drawing as submitted (PNG); `processed`: the 28x28 image the model saw."
        ),
    ] = "input",
) -> Response:
    """The submitted drawing or the 28x28 model input, as image/png."""
    store = store_or_503(ctx)
    png = store.get_image(prediction_id, kind)
    if png is None:
        if store.get(prediction_id) is None:
            raise _not_found(prediction_id)
        raise ApiError(f"Prediction {prediction_id} has no {kind} image stored.", "image_not_found")
    return png_response(request, png)


@router.delete(
    "/predictions/{prediction_id}",
    status_code=204,
    response_class=Response,
    dependencies=ADMIN,
    responses=error_responses(401, 404, 422, 503),
)
def delete_prediction(ctx: Ctx, prediction_id: PredictionId) -> Response:
    """Delete one prediction and its images."""
    if not store_or_503(ctx).delete(prediction_id):
        raise _not_found(prediction_id)
    return Response(status_code=204)


# --- aggregates --------------------------------------------------------------------------------------------


@router.get(
    "/stats",
    response_model=StatsResponse,
    responses=error_responses(422, 503),
)
def stats(
    ctx: Ctx,
    model: ModelFilter = None,
):
    """Per model: predictions, labelled, accuracy on the labelled ones, 10x10 confusion matrix
    (rows = true digit, columns = predicted) and accuracy per day."""
    per_model = store_or_503(ctx).stats(model or None)
    return StatsResponse(
        models=per_model,
        total_predictions=sum(s["predictions"] for s in per_model.values()),
        total_labelled=sum(s["labelled"] for s in per_model.values()),
    )


EXPORT_NAME = "digitlab-labelled.csv"  #: the export's file name, as the browser saves it


@router.get(
    "/export.csv",
    response_class=Response,
    dependencies=ADMIN,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "label,pixel0..pixel783",
        },
        **error_responses(401, 503),
    },
)
def export_csv(ctx: Ctx, request: Request) -> Response:
    """Labelled drawings as CSV `label,pixel0,...,pixel783` (the 28x28 model input, 0-255, ink bright:
    MNIST's convention, ready to append to a training set)."""
    store = store_or_503(ctx)
    if request.scope.get(HEAD_FLAG):  # the headers only: the export itself takes seconds per 30,000 rows
        store.check_readable()  # but the same status as the export would get
        head = Response(media_type="text/csv", headers={"content-disposition": f'attachment; filename="{EXPORT_NAME}"'})
        del head.headers["content-length"]  # (it said 0: the export's length is not known without making it)
        return head
    # in the data folder, which `serve` checked is writable (the system's temporary folder may not be: a
    # read-only container, where every export was a 500)
    folder = os.fspath(ctx.settings.data_dir)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix=".digitlab-export-", suffix=".csv")
    except OSError as exc:
        raise ApiError(f"The export could not be written to DIGITLAB_DATA_DIR ({exc.strerror or exc}); "
                       "see the server's log.", "service_unavailable", status=503) from None
    try:
        # written through the open file, not by name: when the database stops answering and the request is
        # answered 503, the export still running in the store's thread writes to a file already removed (by
        # name it re-created it: a 51 MB file left in /tmp per export cut short)
        with os.fdopen(fd, "w", newline="") as fh:
            store.export_csv(fh)
    except BaseException:
        os.unlink(path)
        raise
    return _WholeExport(path, media_type="text/csv", filename=EXPORT_NAME, headers={"accept-ranges": "none"})


class _WholeExport(FileResponse):
    """The export file, always whole, removed once answered however the answer went: with a Range header
    (`bytes=abc`, `bytes=5-1`) Starlette answered a plain-text 400 or 416 and its clean-up never ran (a full
    export file left in the data folder per request). An export is made for this request: nothing to resume."""

    async def __call__(self, scope, receive, send) -> None:
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]}
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
