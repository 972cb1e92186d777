"""A database outage seen through the API: predictions keep being answered and logged (spooled),
health says so, reads answer 503 `database_unavailable`, feedback is queued, and everything lands in
PostgreSQL once it is reachable again. The outage is a TCP proxy in front of the real server, cut and
restored by the test."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import make_url

from .conftest import ADMIN_TOKEN, LiveServer, assert_error
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def outage_server(pg_databases, served_model_dir, tmp_path):
    url = make_url(pg_databases.create())
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {
        "DIGITLAB_MODEL_DIR": str(served_model_dir),
        "DIGITLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": proxied,
        "DIGITLAB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    server = LiveServer("outage", env, tmp_path).start()
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.stop()


def test_database_outage_and_recovery(outage_server, sample_png, admin):
    server, proxy = outage_server
    with server.client() as api:
        before = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}).json()
        assert before["logged"] and isinstance(before["id"], int)

        proxy.stop()  # the database goes away
        during = []
        for _ in range(3):
            r = api.post(
                "/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"session_id": "outage"}
            )
            assert r.status_code == 200, r.text
            during.append(r.json())
        for p in during:
            assert p["digit"] == 7
            assert p["logged"] is True and p["id"] is None and len(p["uid"]) == 32  # in the spool

        health = api.get("/health").json()
        assert health["status"] == "degraded" and health["database"] == "unavailable"
        assert health["spool"] >= 3
        assert_error(api.get("/api/v1/predictions", headers=admin), 503, "database_unavailable")
        assert_error(api.get("/api/v1/stats"), 503, "database_unavailable")
        queued = api.post(f"/api/v1/predictions/uid/{during[0]['uid']}/feedback", json={"true_digit": 7})
        assert queued.status_code == 200 and queued.json()["queued"] is True

        proxy.start()  # the database is back: the spool drains in order
        wait_for(
            lambda: api.get("/health").json() == {**health, "status": "ok", "database": "ok", "spool": 0}
        )
        rows = api.get("/api/v1/predictions", params={"page_size": 10}, headers=admin).json()["items"]
        by_uid = {row["uid"]: row for row in rows}
        for p in during:
            assert p["uid"] in by_uid
            assert by_uid[p["uid"]]["session_id"] == "outage"
        assert by_uid[during[0]["uid"]]["drawn_digit"] == 7 and by_uid[during[0]["uid"]]["correct"] is True
        after = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}).json()
        assert after["logged"] and isinstance(after["id"], int)
    assert "Traceback" not in server.log_text(), server.log_tail()
