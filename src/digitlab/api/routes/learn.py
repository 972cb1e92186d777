"""Learning from users, over HTTP: start a `digitlab learn` run (admin), follow it, list model versions.

The run is its own process (`python -m digitlab learn --job-id ...`), never work inside an API worker; its
progress lives in the database, so any replica can report on a job another one started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from digitlab.api.deps import Ctx, refuse_repeated_members, require_admin_token, store_or_503, utf8_json
from digitlab.api.errors import ApiError, error_responses
from digitlab.api.schemas import LearnJob, LearnRequest, LearnStarted, ModelVersion
from digitlab.models.registry import MODEL_SPECS
from digitlab.store.db import BusyError, DatabaseUnavailableError, exclusive

router = APIRouter(prefix="/api/v1", tags=["learning"])
_LEARN_BODY = TypeAdapter(LearnRequest | None)


async def learn_body(request: Request) -> LearnRequest | None:
    """`POST /learn`'s optional JSON body, read after the admin check: FastAPI parses a declared body before
    any dependency, so a malformed body without the token was 422 (a hint at the API) instead of 401."""
    raw = await request.body()
    if not raw:
        return None
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):  # the handler answers 415, saying what to send
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "msg": "not JSON"}])
    raw = utf8_json(raw)  # as every route reads JSON (a byte order mark or UTF-16 was "not valid JSON" here only)
    refuse_repeated_members(raw)  # `{"models": ["nope"], "models": ["svm"]}` started a run on the last one
    try:
        return _LEARN_BODY.validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


#: any text: an id that is not one `POST /api/v1/learn` could answer is no job, 404 as the docs say (it was 422
#: "should match pattern"; a probe, session 27)
JobId = Annotated[str, Path(description="The id `POST /api/v1/learn` answered (32 hex digits).")]
_JOB_ID = re.compile(r"[0-9a-fA-F]{32}")


@router.post(
    "/learn",
    status_code=202,
    response_model=LearnStarted,
    dependencies=[Depends(require_admin_token)],
    responses=error_responses(400, 401, 403, 409, 415, 422, 503),
    openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": LearnRequest.model_json_schema()}}}},
)
def start_learning(ctx: Ctx, response: Response, body: Annotated[LearnRequest | None, Depends(learn_body)]):
    """Start learning from the users' labelled drawings in the background; follow it at
    `GET /api/v1/learn/{job_id}`. 409 while a run is going on. An optional JSON body `{"models": [...]}`
    names the models to learn (default: every trained one)."""
    store = store_or_503(ctx)
    job_id = _create_job(store)
    if job_id is None and store.with_database(_clear_dead_runs, store):  # a run killed half-way blocked it
        job_id = _create_job(store)
    if job_id is None:
        busy = store.with_database(store.versions.busy_job)  # (started here, by the CLI or by cron)
        follow = f"follow it at /api/v1/learn/{busy}" if busy else "follow it"
        raise ApiError(f"A learning run is going on already: {follow}, or try again when it has finished.",
                       "learning_busy")  # fmt: skip
    run = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "learn", "--job-id", job_id, *((body and body.models) or ())],
        env=os.environ.copy(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives this worker, and a Ctrl-C meant for the server
    )  # fmt: skip
    # reaped when it ends: it stayed a zombie (<defunct>) under this worker until the next run was started
    threading.Thread(target=run.wait, name=f"digitlab-learn-{job_id[:8]}", daemon=True).start()
    response.headers["Location"] = f"/api/v1/learn/{job_id}"
    return LearnStarted(job_id=job_id, status_url=f"/api/v1/learn/{job_id}")


#: how long a job whose request was answered 503 is looked for, to be marked failed once its row arrives
ABANDON_FOR = 120.0
ABANDONED = "abandoned: the request that queued it was answered 503 (the database did not answer in time)"


def _create_job(store) -> str | None:
    """A new queued job, or None when a run is going on. When the database does not answer in time (503), the
    job's row may still arrive once it does, with no process to start it: it said "queued" and answered the next
    "Learn now" with 409 (a probe, session 45). It is marked failed then (`_abandon`)."""
    job_id = uuid.uuid4().hex
    try:
        return store.with_database(store.versions.create_job_if_idle, job_id)
    except DatabaseUnavailableError:
        threading.Thread(target=_abandon, args=(store, job_id), name=f"digitlab-abandon-{job_id[:8]}",
                         daemon=True).start()  # fmt: skip
        raise


def _abandon(store, job_id: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + ABANDON_FOR
    while time.monotonic() < deadline:
        try:
            if store.with_database(store.versions.abandon_job, job_id, ABANDONED) is not None:
                return  # marked failed, or it began after all
        except Exception:  # noqa: BLE001, S110 -- the database still away: try again
            pass
        time.sleep(every)


def _clear_dead_runs(store) -> int:
    """Jobs still "running" while nobody holds the learning lock belong to a run that was killed (SIGKILL,
    a reboot, an evicted pod), and jobs queued over a minute ago to a process that never began: marked
    failed, so that "Learn now" works again (it answered 409 for ever, then for 10 minutes). How many were
    cleared. A run whose heartbeat is fresh is alive even when the lock is free (its connection dropped and it
    takes the lock back within seconds): it was marked failed while it trained on, and a second run went."""
    if store.versions.alive_job() is not None:  # (and taking the lock now could take it from that run)
        return 0
    try:
        with exclusive(store.engine, "digitlab learn"):
            return store.versions.fail_interrupted_jobs()
    except BusyError:  # a run is alive
        return 0


@router.get("/learn/{job_id}", response_model=LearnJob, responses=error_responses(404, 422, 503))
def learning_job(ctx: Ctx, job_id: JobId):
    """A learning run: status (queued, running, done, failed), progress 0-1, the last message and, when
    done, what was promoted or rejected and why."""
    if not _JOB_ID.fullmatch(job_id):
        raise ApiError(f"There is no learning job {job_id[:40]!r}: job ids are 32 hex digits.", "learn_job_not_found", status=404)
    store = store_or_503(ctx)
    job_id = job_id.lower()  # hex, as a person may copy it (it was 422 "should match pattern")
    job = store.with_database(store.versions.job, job_id)
    if job is not None and job.get("status") in ("running", "queued") and store.with_database(_clear_dead_runs, store):
        job = store.with_database(store.versions.job, job_id)  # its process was killed or never began: "failed"
    if job is None:
        raise ApiError(f"There is no learning job {job_id}.", "learn_job_not_found", status=404)
    return LearnJob.model_validate(job)


@router.get("/models/{name}/versions", response_model=list[ModelVersion], responses=error_responses(404, 422, 503))
def model_versions(ctx: Ctx, name: str):
    """Every learned version of a model, newest first: when built, from how many drawings, accuracy on the
    held-out users' drawings before and after, status (promoted, rejected, retired) and why."""
    if name not in MODEL_SPECS:
        raise ApiError(f"Unknown model {name[:40]!r}: choose one of {', '.join(MODEL_SPECS)}.", "unknown_model")
    store = store_or_503(ctx)
    return [ModelVersion.model_validate(v.to_json()) for v in store.with_database(store.versions.list, name)]
