"""Learning jobs: simultaneous "Learn now" requests start one run (both backends)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import update

from digitlab.store.models import JOBS
from digitlab.store.records import utc_now


def test_simultaneous_requests_create_one_job(store):
    """The check and the insert were two steps: four simultaneous requests all got 202 and four runs."""
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: store.versions.create_job_if_idle(), range(8)))
    created = [i for i in ids if i is not None]
    assert len(created) == 1
    assert store.versions.job(created[0])["status"] == "queued"
    assert store.versions.create_job_if_idle() is None  # still queued: busy


def test_a_finished_or_long_stale_job_does_not_block_the_next(store):
    first = store.versions.create_job_if_idle()
    store.versions.finish_job(first, "done", "ok")
    second = store.versions.create_job_if_idle()
    assert second is not None
    with store.engine.begin() as conn:  # queued long ago by a process that died before it started
        conn.execute(update(JOBS).where(JOBS.c.id == second).values(created_at=JOBS.c.created_at - timedelta(hours=1)))
    assert store.versions.create_job_if_idle() is not None


def test_a_job_queued_to_a_process_that_never_began_is_failed_after_a_minute(store):
    """A job queued while the database hung (the request was answered 503, the row arrived after) or whose
    process died at start stayed "queued" and blocked the next run for 10 minutes; with the learning lock
    free it is failed once it is a minute old. A fresh queued job and a finished one are left alone."""
    fresh = store.versions.create_job_if_idle()
    assert store.versions.fail_interrupted_jobs() == 0  # just queued: its process may be starting
    assert store.versions.job(fresh)["status"] == "queued"
    with store.engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == fresh).values(created_at=utc_now() - timedelta(minutes=2)))
    assert store.versions.fail_interrupted_jobs() == 1
    job = store.versions.job(fresh)
    assert job["status"] == "failed" and "never started" in job["message"]
    assert store.versions.create_job_if_idle() is not None  # "Learn now" works again at once


def test_a_running_job_with_a_fresh_heartbeat_is_alive_though_the_lock_is_free(store):
    """A dropped lock connection frees the learning lock on the server until the run takes it back (up to
    5 s): a status request then marked the job failed while it trained on, and "Learn now" started a second
    run. A run beats while it holds the lock; a job silent for DEAD_AFTER with the lock free is dead."""
    from digitlab.store.versions import DEAD_AFTER

    job = store.versions.create_job_if_idle()
    store.versions.start_job(job, "refitting")
    assert store.versions.alive_job() is None  # (no beat: a run on SQLite, whose file lock cannot drop)
    store.versions.beat_job(job)  # its lock keeper's first beat (PostgreSQL)
    assert store.versions.alive_job() == job
    assert store.versions.fail_interrupted_jobs() == 0 and store.versions.job(job)["status"] == "running"
    assert store.versions.create_job_if_idle() is None  # and no second run
    with store.engine.begin() as conn:  # killed: no beat since
        conn.execute(update(JOBS).where(JOBS.c.id == job).values(heartbeat_at=utc_now() - DEAD_AFTER - timedelta(seconds=1)))
    assert store.versions.alive_job() is None
    store.versions.beat_job(job)  # (a beat makes it alive again)
    assert store.versions.alive_job() == job
    with store.engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job).values(heartbeat_at=utc_now() - DEAD_AFTER - timedelta(seconds=1)))
    assert store.versions.fail_interrupted_jobs() == 1
    assert store.versions.job(job)["status"] == "failed"
