"""Read numbers in the store: history (admin), the submitted image (admin), and "what did you write?"
feedback (open, like predicting). Reads during a database outage answer 503 `database_unavailable`;
feedback is queued in the outage spool instead (by id, or by uid for a number that is still spooled)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from digitlab.api.deps import Ctx, json_members_once, require_admin, store_or_503
from digitlab.api.errors import ApiError, answer_not_stored, error_responses
from digitlab.api.routes.predictions import (
    MAX_ID,
    PNG_RESPONSES,
    CorrectFilter,
    ModelFilter,
    PageNumber,
    PlainId,
    SinceFilter,
    Uid,
    UntilFilter,
    png_response,
    query_utc,
)
from digitlab.api.schemas import NumberFeedback, NumberFeedbackResponse, NumberPage
from digitlab.store import numbers as repo

router = APIRouter(prefix="/api/v1", tags=["numbers"])

NumberId = Annotated[int, Path(ge=1, le=MAX_ID, description="The read number's database id."), PlainId]
ADMIN = [Depends(require_admin)]


def _not_found(number_id: int | str) -> ApiError:
    return ApiError(f"There is no read number {number_id}.", "number_not_found", status=404)


async def _query(ctx, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one repository function with the store's outage handling (`with_database`: a frozen database
    is a 503 within a few seconds; these two routes waited for it as long as it stayed frozen)."""
    store = store_or_503(ctx)
    try:
        return await anyio.to_thread.run_sync(lambda: store.with_database(fn, store.engine, *args))
    except SQLAlchemyError as exc:
        raise ApiError(
            "The prediction database is unavailable; try again shortly.", "database_unavailable"
        ) from exc


async def _feedback(ctx, body: NumberFeedback, *, number_id: int | None = None, uid: str | None = None):
    store = store_or_503(ctx)
    true_text = repo.NOT_A_NUMBER if body.not_number else body.true_text
    try:
        result = await anyio.to_thread.run_sync(
            lambda: store.set_number_feedback(true_text, id=number_id, uid=uid)
        )
    except (SQLAlchemyError, OSError) as exc:  # refused by the database, and the spool cannot take it
        raise answer_not_stored() from exc
    if result is None:
        raise _not_found(uid or number_id)
    row = result.number
    return NumberFeedbackResponse(
        id=row.id if row is not None else number_id,
        uid=row.uid if row is not None else uid,
        text=row.text if row is not None else None,
        true_text=body.true_text,
        not_number=body.not_number,
        correct=row.correct if row is not None else None,
        stored=result.stored,
        queued=result.stored == "spool",
    )


@router.post(
    "/numbers/{number_id}/feedback",
    dependencies=[Depends(json_members_once)],
    response_model=NumberFeedbackResponse,
    responses=error_responses(400, 404, 415, 422, 503),
)
async def number_feedback(ctx: Ctx, number_id: NumberId, body: NumberFeedback):
    """What was really written (`true_text`, digits only), or `not_number: true` for a writing that is no number:
    sets the stored answer and `correct` (false for `not_number`). During a database outage the answer is queued
    (`queued: true`) and applied when the database is back."""
    return await _feedback(ctx, body, number_id=number_id)


@router.post(
    "/numbers/uid/{uid}/feedback",
    dependencies=[Depends(json_members_once)],
    response_model=NumberFeedbackResponse,
    responses=error_responses(400, 404, 415, 422, 503),
)
async def number_feedback_by_uid(ctx: Ctx, uid: Uid, body: NumberFeedback):
    """The same by `uid`: works for a reading answered with `id: null` (spooled during an outage)."""
    return await _feedback(ctx, body, uid=uid.lower())


@router.get(
    "/numbers",
    response_model=NumberPage,
    dependencies=ADMIN,
    responses=error_responses(401, 422, 503),
)
async def list_numbers(
    ctx: Ctx,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=repo.MAX_PAGE_SIZE), PlainId] = 50,
    model: ModelFilter = None,
    correct: CorrectFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
):
    """A page of read numbers, newest first (no image bytes: see `.../{id}/image`), filtered like
    `/predictions`."""
    filters = {"model": model or None, "correct": correct,
               "since": query_utc(since, "since"), "until": query_utc(until, "until")}  # fmt: skip
    items, total = await _query(ctx, partial(repo.list_numbers, **filters), page, page_size)
    return NumberPage(items=items, total=total, page=page, page_size=page_size)


@router.get(
    "/numbers/{number_id}/image",
    response_class=Response,
    dependencies=ADMIN,
    responses={**PNG_RESPONSES, **error_responses(401, 404, 422, 503)},
)
async def number_image(ctx: Ctx, number_id: NumberId, request: Request) -> Response:
    """The submitted image of a read number, as image/png."""
    png = await _query(ctx, repo.get_number_image, number_id)
    if png is None:
        raise _not_found(number_id)
    return png_response(request, png)
