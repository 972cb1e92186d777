"""The FastAPI application: `create_app(settings)` builds it; its lifespan loads the models (SHA-256
checked) and opens the prediction store once, before the first request is accepted.

    uvicorn --factory digitlab.api.main:create_app      # or: digitlab serve
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from fastapi import FastAPI

from digitlab import __version__ as _pkg_version
from digitlab.api import metrics as metrics_module
from digitlab.api.batching import PredictionBatcher
from digitlab.api.context import AppContext
from digitlab.api.docs import install_docs
from digitlab.api.errors import install_error_handlers, methods_by_path, with_transport_errors
from digitlab.api.head import HeadAsGetMiddleware
from digitlab.api.limits import BodyLimitMiddleware, OneValuePerQueryKey, query_names
from digitlab.api.metrics import Metrics, MetricsMiddleware
from digitlab.api.server import usable_cores
from digitlab.api.upkeep import (
    MODEL_REFRESH_SECONDS,
    files_key,
    refresh_gauges,
    refresh_learned,
    refresh_models,
    warm_up,
)
from digitlab.core.config import Settings
from digitlab.models.registry import MODEL_SPECS, ModelRegistry

log = logging.getLogger("digitlab.api")

#: Threads that run CPU work (preprocessing + inference) at once: more than the cores only adds GIL
#: contention. Store writes are awaited on the event loop (a Future the store's writer thread
#: completes), so a slow database never holds a CPU slot.
CPU_THREADS = max(2, os.cpu_count() or 1)

DESCRIPTION = """\
Handwritten-digit recognition. Send a drawing to `POST /api/v1/predict` (multipart file field `image`,
or JSON with `image` as base64) and get the digit, the confidence and all ten probabilities back.
Every prediction is logged; tell the API what was really drawn with
`POST /api/v1/predictions/{id}/feedback`. Errors are JSON `{"detail": "...", "code": "..."}`.
"""


def _open_store(settings: Settings):
    from digitlab.store import from_settings

    return from_settings(settings).start()


def open_store_or_retry_later(ctx: AppContext, *, again: bool = False) -> None:
    """`ctx.store`, started; when it cannot start (an unwritable spool folder, a full disk) the API serves anyway,
    its answers `logged: false`, and `_refresh_loop` calls this `again` every few seconds (a worker started so
    stored nothing for its whole life, and said the database was unavailable: a probe, session 30)."""
    try:
        ctx.store = _open_store(ctx.settings)
    except Exception as exc:  # noqa: BLE001
        if not again:
            log.error("prediction store not available, predictions will not be logged until it is: %s", exc)
        return
    if again:
        log.info("prediction store available: predictions are logged again")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app. Without `settings`, they are read from the environment (DIGITLAB_*, DATABASE_URL)."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    ctx = AppContext(settings=settings, registry=ModelRegistry(settings.model_dir), metrics=metrics)
    ctx.batcher = PredictionBatcher(ctx, slots=cpu_slots(settings.workers))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        limit_blas_threads()
        metrics.forget_dead_workers()
        metrics_module.refused_by_protocol = metrics.count_refused  # (the HTTP protocol's own 400s and 431s)
        ctx.cpu_limiter = anyio.CapacityLimiter(CPU_THREADS)

        def load_models() -> None:
            for name in MODEL_SPECS:
                ctx.manifest_keys[name] = files_key(ctx, name)
            ctx.registry.load_all()
            try:
                from digitlab.detector.runtime import load_detector

                ctx.detector = load_detector(settings.model_dir)
            except Exception as exc:  # noqa: BLE001 - serve without it; `uncertain` falls back to confidence
                log.error("not-a-digit detector not loaded, uncertainty uses confidence only: %s", exc)
            try:
                from digitlab.segment_verifier import load_segment_verifier

                ctx.segment_verifier = load_segment_verifier(settings.model_dir)
            except Exception as exc:  # noqa: BLE001 - read numbers without it: the model's probabilities decide
                log.error("segment verifier not loaded, numbers are split by the model alone: %s", exc)
            try:
                from digitlab.line_reader import load_line_reader

                ctx.line_reader = load_line_reader(settings.model_dir)
            except Exception as exc:  # noqa: BLE001 - read numbers without its second opinion
                log.error("line reader not loaded, numbers are read by their segmentation alone: %s", exc)
            warm_up(ctx)

        async with anyio.create_task_group() as tg:  # models and store load in parallel

            async def _models() -> None:
                await anyio.to_thread.run_sync(load_models)

            async def _store() -> None:
                await anyio.to_thread.run_sync(open_store_or_retry_later, ctx)

            tg.start_soon(_models)
            tg.start_soon(_store)
        # the versions promoted in the database before the first request: a (re)started replica answered with
        # the model files for its first poll's 5 s while it said ready
        await anyio.to_thread.run_sync(refresh_learned, ctx)
        status = ctx.registry.status()
        database = await anyio.to_thread.run_sync(refresh_gauges, ctx)
        ctx.ready_at = time.perf_counter()
        log.info(
            "ready in %.1f s; models: %s; database: %s",
            ctx.ready_at - started,
            ", ".join(f"{n}={s}" for n, s in status.items()),
            database,
        )
        if not Path(settings.model_dir).is_dir():  # a typo in a deployment served the bundled CNN only, silently
            log.warning("DIGITLAB_MODEL_DIR=%s does not exist: only the bundled models are served until "
                        "models are trained into it", settings.model_dir)  # fmt: skip
        preferred = settings.default_model
        if (
            preferred and preferred not in ctx.registry.ready_names()
        ):  # (an unknown name is refused by Settings)
            log.warning("DIGITLAB_DEFAULT_MODEL=%s is %s: requests that name no model get %s", preferred,
                        status.get(preferred), ctx.registry.default_name() or "an error (no model is ready)")  # fmt: skip
        refresher = asyncio.create_task(_refresh_loop(ctx))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await anyio.to_thread.run_sync(ctx.batcher.close)  # requests in flight finish first
            if ctx.store is not None:
                await anyio.to_thread.run_sync(ctx.store.close)
                ctx.store = None
            metrics.process_exiting()

    app = FastAPI(
        title="digitlab",
        version=_pkg_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from local files rather than a CDN
        redoc_url=None,
        # no 307 to the path without its trailing slash: Starlette built that Location from the client's Host
        # header (`Host: evil.example` -> `location: http://evil.example/...`); the 404 names the path instead
        redirect_slashes=False,
    )
    install_docs(app)
    app.openapi = _documenting_transport_errors(app.openapi)
    app.state.ctx = ctx
    app.state.metrics = metrics
    install_error_handlers(app)

    from digitlab.api.routes import health, learn, models, numbers, predict, predictions, read
    from digitlab.api.routes import metrics as metrics_route

    routers = (predict, health, models, read, numbers, predictions, learn, metrics_route)
    for module in routers:  # predict first: the hot route, matched before the others are tried
        app.include_router(module.router)
    app.state.methods_by_path = methods_by_path([route for m in routers for route in m.router.routes])

    app.add_middleware(HeadAsGetMiddleware)  # innermost: the limits and metrics see the request as sent
    on_error = lambda code: metrics.errors.labels(code).inc()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, on_error=on_error)
    app.add_middleware(OneValuePerQueryKey, on_error=on_error, read=lambda: query_names(app.openapi()))
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, routes=lambda: app.router.routes
    )  # outermost: times everything, 413s included
    return app


def _documenting_transport_errors(build):
    """FastAPI's `app.openapi` (which keeps its document), with the 408 / 413 / 431 the server answers before
    routing listed on it."""

    def openapi() -> dict:
        return with_transport_errors(build())

    return openapi


def cpu_slots(workers: int) -> int:
    """Predict batches one worker process computes at once: its share of the cores.

    `digitlab serve` passes its worker count down (DIGITLAB_WORKERS); 0 means one worker per core, so
    one slot each. Measured with two workers on two cores: one slot each used 15 % less CPU per
    prediction and answered more than two slots each (bigger batches, less contention for the GIL).
    """
    return 1 if workers <= 0 else max(1, usable_cores() // workers)


def limit_blas_threads() -> None:
    """One BLAS / OpenMP thread per call: requests are the parallelism here.

    One drawing is a matrix-vector product; OpenBLAS splitting it over threads that then spin while
    they wait burned more CPU than the SVM itself (measured: 30 ms of CPU per svm request with 2 BLAS
    threads under load, against 15 for the CNN). Must run in the main thread, as the lifespan does
    under uvicorn: OpenBLAS ignores the setting from other threads.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


async def _refresh_loop(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(MODEL_REFRESH_SECONDS)
        try:
            if ctx.store is None:
                await anyio.to_thread.run_sync(functools.partial(open_store_or_retry_later, ctx, again=True))
            await anyio.to_thread.run_sync(refresh_models, ctx)
            await anyio.to_thread.run_sync(refresh_gauges, ctx)
        except Exception:  # never let the loop die; the next round tries again
            log.exception("checking for new model files failed")
