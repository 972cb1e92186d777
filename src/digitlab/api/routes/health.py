"""`GET /health`: models, database, spool and the parts beside the models; `status: degraded` when the
database or every model is down (a missing part beside them only narrows what answers carry)."""

from __future__ import annotations

from fastapi import APIRouter

from digitlab.api.context import AppContext
from digitlab.api.deps import Ctx
from digitlab.api.schemas import HealthResponse

router = APIRouter(tags=["health"])


def health_payload(ctx: AppContext) -> HealthResponse:
    models = ctx.registry.status()
    if ctx.store is None:
        store = {"database": "unavailable", "spool": 0}
    else:
        try:
            store = ctx.store.health()
        except Exception:  # a broken probe is an unavailable database, not a 500  # noqa: BLE001
            store = {"database": "unavailable", "spool": 0}
    ready = any(state == "ready" for state in models.values())
    status = "ok" if ready and store["database"] == "ok" else "degraded"
    components = {
        "detector": "ready" if ctx.detector is not None else "missing",
        "segment_verifier": "ready" if ctx.segment_verifier is not None else "missing",
        "line_reader": "ready" if ctx.line_reader is not None else "missing",
    }
    return HealthResponse(
        status=status, models=models, database=store["database"], spool=int(store["spool"]), components=components
    )


@router.get("/health", response_model=HealthResponse)
def health(ctx: Ctx):
    """Always 200 once the server is up; read `status` (and the parts) to know whether all is well."""
    return health_payload(ctx)
