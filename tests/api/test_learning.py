"""Learned versions reach every API process without a restart: two servers on one PostgreSQL database,
a promotion and a rollback, the version recorded with each prediction; and the learning endpoints."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from digitlab.models.artifacts import read_verified
from digitlab.store.db import make_engine, upgrade
from digitlab.store.models import JOBS
from digitlab.store.records import utc_now
from digitlab.store.versions import VersionStore
from digitlab.training.classical import train_models

from .conftest import ADMIN_TOKEN, LiveServer, assert_error, draw_digit

pytestmark = pytest.mark.postgres
PICKUP_LIMIT = 30.0  # seconds: a promotion must reach every process within this


def _served_version(server: LiveServer, name: str) -> str | None:
    with server.client() as c:
        return next((m["version"] for m in c.get("/api/v1/models").json() if m["name"] == name), None)


def _wait_for(servers: list[LiveServer], name: str, version: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < PICKUP_LIMIT + 5:
        if all(_served_version(s, name) == version for s in servers):
            return time.monotonic() - started
        time.sleep(0.5)
    pytest.fail(f"{name} version {version} not served by every process: "
                f"{[_served_version(s, name) for s in servers]}")  # fmt: skip


@pytest.fixture(scope="module")
def two_servers(pg_databases, served_model_dir, tmp_path_factory):
    url = pg_databases.create()
    root = tmp_path_factory.mktemp("learning")
    servers = []
    for name in ("a", "b"):
        env = {"DIGITLAB_MODEL_DIR": str(served_model_dir), "DIGITLAB_DATA_DIR": str(root / name),
               "DATABASE_URL": url, "DIGITLAB_ADMIN_TOKEN": ADMIN_TOKEN}  # fmt: skip
        (root / name).mkdir()
        servers.append(LiveServer(f"learning-{name}", env, root / name).start())
    yield url, servers
    for server in servers:
        server.stop()


def test_a_promotion_reaches_both_processes_and_each_prediction_names_its_version(
    two_servers, tmp_path, mnist_dir, admin
):
    url, servers = two_servers
    train_models(["svm_pca"], tmp_path, limit=1500, jobs=1, mnist_dir=mnist_dir)  # other bytes than served
    manifest, payload = read_verified(tmp_path, "svm_pca")
    engine = make_engine(url)
    upgrade(engine)
    versions = VersionStore(engine)
    versions.add("svm_pca", "2", payload, {**manifest, "version": "2"}, status="promoted", parent="1.0.0")
    seconds = _wait_for(servers, "svm_pca", "2")
    print(f"\npromotion served by both processes after {seconds:.1f} s")
    for server in servers:
        with server.client() as c:
            p = c.post("/api/v1/predict", files={"image": ("d.png", draw_digit())}, data={"model": "svm_pca"}).json()
            assert p["model_version"] == "2"
            row = c.get(f"/api/v1/predictions/{p['id']}", headers=admin).json()
            assert row["model_version"] == "2"
        with server.client() as c:
            listed = c.get("/api/v1/models/svm_pca/versions").json()
            assert listed[0]["version"] == "2" and listed[0]["status"] == "promoted"
    assert versions.rollback("svm_pca") is None  # no earlier learned version: back to the files
    print(f"rollback served by both processes after {_wait_for(servers, 'svm_pca', '1.0.0'):.1f} s")
    engine.dispose()


def test_learn_endpoints(two_servers, admin):
    _, servers = two_servers
    with servers[0].client() as c:
        assert_error(c.post("/api/v1/learn"), 401, "unauthorized")
        r = c.post("/api/v1/learn", headers=admin)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == job["status_url"]
    deadline = time.monotonic() + 120
    with servers[1].client() as c:  # any replica answers for the job
        while time.monotonic() < deadline:
            state = c.get(job["status_url"]).json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
        assert state["status"] == "done", state
        assert "no labelled drawings" in state["message"]
        assert_error(c.get("/api/v1/learn/" + "0" * 32), 404, "learn_job_not_found")
        assert_error(c.get("/api/v1/learn/xyz"), 404, "learn_job_not_found")  # (it was 422 "should match pattern")
        assert_error(c.get("/api/v1/learn/" + "a" * 201), 404, "learn_job_not_found")  # (422 past 200 characters)
        # a member sent twice is refused, not "the last one wins" (a run was started on it), even during a run
        twice = c.post("/api/v1/learn", headers={**admin, "Content-Type": "application/json"},
                       content=b'{"models": ["nope"], "models": ["svm"]}')  # fmt: skip
        assert_error(twice, 422, "invalid_fields")
        assert "'models' was sent more than once" in twice.json()["detail"]
        deep = c.post("/api/v1/learn", headers={**admin, "Content-Type": "application/json"},
                      content=b'{"models": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # fmt: skip
        assert_error(deep, 422, "invalid_fields")  # (a 500: RecursionError)
        assert_error(c.get("/api/v1/models/nope/versions"), 404, "unknown_model")
    assert httpx.get(servers[0].url + "/health", timeout=10).json()["status"] == "ok"


def test_a_run_killed_half_way_does_not_block_learn_now(two_servers, admin):
    """A run killed half-way (SIGKILL, a reboot) leaves its job "running": "Learn now" answered 409 for
    ever, since only a later run clears such jobs and through the API none could start."""
    url, servers = two_servers
    engine = make_engine(url)
    versions = VersionStore(engine)
    dead = versions.create_job_if_idle()
    versions.start_job(dead, "reading the labelled drawings")
    versions.beat_job(dead)  # (its lock keeper's, on PostgreSQL)
    with servers[0].client() as c:
        # its heartbeat is fresh: alive, though nobody holds the lock (its connection dropped a moment ago: it
        # was marked failed while it trained on, and "Learn now" started a second run)
        assert c.get(f"/api/v1/learn/{dead}").json()["status"] == "running"
        assert_error(c.post("/api/v1/learn", headers=admin), 409, "learning_busy")
        with engine.begin() as conn:  # ...and then the process was killed: no beat since
            conn.execute(update(JOBS).where(JOBS.c.id == dead).values(heartbeat_at=utc_now() - timedelta(minutes=1)))
        assert c.get(f"/api/v1/learn/{dead}").json()["status"] == "failed"  # said "running" at 0 % for ever
        r = c.post("/api/v1/learn", headers=admin)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and c.get(r.json()["status_url"]).json()["status"] not in ("done", "failed"):
            time.sleep(0.5)
        # a job queued to a process that never began (a 503 during a database hang, a crash at start): it said
        # "queued" and blocked "Learn now" for 10 minutes; a minute on, with no run alive, it is failed
        unstarted = versions.create_job_if_idle()
        with engine.begin() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == unstarted).values(created_at=utc_now() - timedelta(minutes=2)))
        job = c.get(f"/api/v1/learn/{unstarted}").json()
        assert job["status"] == "failed" and "never started" in job["message"], job
    engine.dispose()
