"""`GET /metrics`: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from digitlab.api.deps import Ctx
from digitlab.api.upkeep import refresh_gauges

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}
    },
)
def metrics(ctx: Ctx) -> Response:
    """Request counts and latency histograms per route and model, predictions per digit, store write
    failures, spool size, database and model readiness."""
    refresh_gauges(ctx)
    body, content_type = ctx.metrics.exposition()
    return Response(body, media_type=content_type)
