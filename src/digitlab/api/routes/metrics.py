"""`GET /metrics`: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from digitlab.api.deps import Ctx

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
    m = ctx.metrics
    for name, state in ctx.registry.status().items():
        m.model_ready.labels(name).set(1 if state == "ready" else 0)
    if ctx.store is not None:
        try:
            state = ctx.store.health()
            m.spool_pending.set(state["spool"])
            m.database_up.set(1 if state["database"] == "ok" else 0)
        except Exception:  # noqa: BLE001
            m.database_up.set(0)
    else:
        m.database_up.set(0)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
