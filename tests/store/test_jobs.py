"""Learning jobs: simultaneous "Learn now" requests start one run (both backends)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import update

from digitlab.store.models import JOBS


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
