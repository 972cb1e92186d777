"""A database outage seen through the API: predictions and read numbers keep being answered and logged
(spooled), health says so, reads answer 503 `database_unavailable`, feedback is queued, and everything
lands in the database once it is reachable again, exactly once. On PostgreSQL the outage is a TCP proxy in
front of the real server, cut and restored by the test; on SQLite (the default) another process holds the
database file's write lock."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from digitlab.api.schemas import drawing_key
from drawn_numbers import draw_number

from .conftest import ADMIN_TOKEN, LiveServer, assert_error, draw_digit
from .tcp_proxy import TcpProxy


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


@pytest.mark.postgres
def test_number_reads_answer_503_while_the_database_is_frozen(outage_server, admin):
    """The history of read numbers and a number's image waited as long as PostgreSQL answered nothing (90 s
    in the probe); every other read answered 503 within seconds. Now they do too."""
    server, proxy = outage_server
    with server.client(timeout=30) as api:
        number = read_number(api, "42")
        for path in ("/api/v1/numbers", f"/api/v1/numbers/{number['id']}/image"):
            assert api.get(path, headers=admin).status_code == 200  # (a pooled connection to freeze)
        proxy.frozen.set()
        try:
            for path in ("/api/v1/numbers", f"/api/v1/numbers/{number['id']}/image"):
                started = time.monotonic()
                assert_error(api.get(path, headers=admin), 503, "database_unavailable")
                assert time.monotonic() - started < 8
        finally:
            proxy.frozen.clear()


@pytest.mark.postgres
def test_database_outage_and_recovery(outage_server, sample_png, admin):
    server, proxy = outage_server
    with server.client() as api:
        before = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}).json()
        assert before["logged"] and isinstance(before["id"], int)

        proxy.stop()  # the database goes away
        # the export's headers promise what the export would answer, noticed before any write met the outage
        assert api.head("/api/v1/export.csv", headers=admin).status_code == 503
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
        assert api.head("/api/v1/export.csv", headers=admin).status_code == 200
    assert "Traceback" not in server.log_text(), server.log_tail()


@pytest.mark.postgres
def test_outage_under_continuous_load_loses_nothing(outage_server, sample_png):
    """Four clients predict without pause; PostgreSQL is unreachable for 10.5 s in the middle.

    Every request must be answered, and afterwards the table must hold exactly one row per answered
    prediction: the same uids, the database ids unique, nothing missing, nothing twice.
    """
    import threading

    server, proxy = outage_server
    answered: list[dict] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with server.client(timeout=30) as api:
            while not stop.is_set():
                r = api.post("/api/v1/predict", files={"image": ("d.png", sample_png)}, data={"session_id": "load"})
                if r.status_code == 200 and r.json()["logged"]:
                    answered.append(r.json())
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    proxy.stop()
    outage_started = time.monotonic()
    time.sleep(10.5)
    proxy.start()
    outage_seconds = time.monotonic() - outage_started
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    assert not failures, failures[:5]
    spooled = [p for p in answered if p["id"] is None]
    assert len(spooled) > 20 and outage_seconds >= 10  # the outage really happened under load
    with server.client() as api:
        wait_for(lambda: api.get("/health").json()["spool"] == 0, timeout=60)
    engine = create_engine(server.env["DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, uid FROM user_predictions WHERE session_id = 'load'")).all()
    engine.dispose()
    assert len(rows) == len(answered)
    assert {uid for _, uid in rows} == {p["uid"] for p in answered}
    assert len({row_id for row_id, _ in rows}) == len(rows)
    direct_ids = {p["id"] for p in answered if p["id"] is not None}
    assert direct_ids <= {row_id for row_id, _ in rows}
    print(f"\noutage {outage_seconds:.1f} s: {len(answered)} answered, {len(spooled)} spooled, 0 failed, "
          f"{len(rows)} rows")


# --- read numbers (POST /api/v1/read) ---------------------------------------------------------------------

READ = "/api/v1/read"


def read_number(api, text_: str, **data) -> dict:
    r = api.post(READ, files={"image": ("n.png", draw_number(text_), "image/png")}, data={"model": "cnn", **data})
    assert r.status_code == 200, r.text
    return r.json()


def numbers_during_an_outage(server, cut, restore, *, reads_fail: bool = True) -> None:
    """Numbers read while the database is away are answered `logged: true`, `id: null`; answers to them
    (by uid, and by id for one stored before) are queued; once it is back each number is stored once."""
    with server.client() as api:
        before = read_number(api, "42", session_id="before")
        assert before["logged"] is True and isinstance(before["id"], int) and len(before["uid"]) == 32

        cut()
        plain = read_number(api, "307", session_id="outage")
        live = [read_number(api, t, session_id="outage", drawing_id="d-outage") for t in ("2024", "2024", "2024")]
        for n in (plain, *live):
            assert n["logged"] is True and n["id"] is None and len(n["uid"]) == 32  # in the spool
        assert len({n["uid"] for n in (plain, *live)}) == 4
        by_uid = api.post(f"/api/v1/numbers/uid/{plain['uid']}/feedback", json={"true_text": "307"})
        assert by_uid.status_code == 200, by_uid.text
        assert by_uid.json() | {"queued": True, "stored": "spool", "id": None, "uid": plain["uid"]} == by_uid.json()
        by_id = api.post(f"/api/v1/numbers/{before['id']}/feedback", json={"true_text": "41"})
        assert by_id.status_code == 200 and by_id.json()["queued"] is True
        nothing = api.post(f"/api/v1/numbers/uid/{live[-1]['uid']}/feedback", json={"not_number": True})
        assert nothing.status_code == 200 and nothing.json()["queued"] is True, nothing.text
        assert nothing.json()["not_number"] is True and nothing.json()["true_text"] is None
        assert api.get("/health").json()["spool"] >= 7
        if reads_fail:  # (SQLite: a write lock does not stop readers)
            assert_error(api.get("/api/v1/numbers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), 503,
                         "database_unavailable")  # fmt: skip

        restore()
        wait_for(lambda: api.get("/health").json()["spool"] == 0, timeout=60)
        wait_for(lambda: api.get("/health").json()["database"] == "ok", timeout=30)
        after = read_number(api, "5", session_id="after")
        assert isinstance(after["id"], int)

    engine = create_engine(server.env["DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, uid, text, true_text, correct, session_id, drawing_id FROM read_numbers"))
        rows = {row.uid: row for row in rows}
    engine.dispose()
    assert len(rows) == 4  # before, the plain number, the drawing (one row for its three reads), after
    assert set(rows) == {before["uid"], plain["uid"], live[-1]["uid"], after["uid"]}
    stored = rows[plain["uid"]]
    assert (stored.text, stored.true_text, stored.session_id) == (plain["text"], "307", "outage")
    assert bool(stored.correct) is (plain["text"] == "307")
    assert rows[before["uid"]].true_text == "41" and rows[before["uid"]].id == before["id"]
    assert rows[live[-1]["uid"]].drawing_id == drawing_key("outage", "d-outage")  # (scoped to its session)
    assert rows[live[-1]["uid"]].true_text == "-" and not rows[live[-1]["uid"]].correct  # "not a number", replayed
    assert "Traceback" not in server.log_text(), server.log_tail()


@pytest.mark.postgres
def test_numbers_read_during_an_outage_are_stored_once(outage_server):
    server, proxy = outage_server
    numbers_during_an_outage(server, proxy.stop, proxy.start)


@pytest.fixture
def sqlite_locked_server(served_model_dir, tmp_path):
    """A server on the default SQLite file, and a connection of another process's kind to hold its write
    lock (`BEGIN EXCLUSIVE`): writes fail with "database is locked" after the busy timeout, which the store
    treats as an outage."""
    db = tmp_path / "digitlab.db"
    env = {
        "DIGITLAB_MODEL_DIR": str(served_model_dir),
        "DIGITLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{db.as_posix()}",
        "DIGITLAB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    server = LiveServer("sqlite-lock", env, tmp_path).start()
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        yield server, holder
    finally:
        holder.close()
        server.stop()


def test_numbers_read_while_sqlite_is_locked_are_stored_once(sqlite_locked_server):
    server, holder = sqlite_locked_server
    numbers_during_an_outage(server, lambda: holder.execute("BEGIN EXCLUSIVE"),
                             lambda: holder.execute("ROLLBACK"), reads_fail=False)  # fmt: skip


def test_a_drawing_labelled_during_an_outage_keeps_its_label_and_latest_stroke(sqlite_locked_server, sample_png):
    """The canvas predicts after each stroke with the drawing's id; the person labels the drawing by the uid
    they were shown (the first stroke's), then adds a stroke, all while the database is away. Replayed, the
    drawing is one row: the latest stroke's prediction and uid, and the label."""
    server, holder = sqlite_locked_server
    with server.client() as api:

        def stroke(png: bytes) -> dict:
            data = {"model": "svm", "drawing_id": "d-outage", "session_id": "outage", "source": "ui"}
            r = api.post("/api/v1/predict", files={"image": ("d.png", png, "image/png")}, data=data)
            assert r.status_code == 200, r.text
            return r.json()

        holder.execute("BEGIN EXCLUSIVE")
        first = stroke(sample_png)
        assert first["logged"] is True and first["id"] is None  # in the spool
        label = api.post(f"/api/v1/predictions/uid/{first['uid']}/feedback", json={"true_digit": 7})
        assert label.status_code == 200 and label.json()["queued"] is True
        last = stroke(draw_digit(pen="#aa0000"))
        assert last["id"] is None and last["uid"] != first["uid"]
        holder.execute("ROLLBACK")
        wait_for(lambda: api.get("/health").json()["spool"] == 0, timeout=60)
        again = api.post(f"/api/v1/predictions/uid/{first['uid']}/feedback", json={"true_digit": 7})
        assert again.status_code == 200, again.text  # the label lands on the drawing's row at once: not "queued"
        assert (again.json()["queued"], again.json()["stored"]) == (False, "database")
        assert again.json()["id"] is not None and again.json()["correct"] == (last["digit"] == 7)

    engine = create_engine(server.env["DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT uid, predicted_digit, drawn_digit, correct FROM user_predictions WHERE drawing_id = :d"),
            {"d": drawing_key("outage", "d-outage")},
        ).all()
    engine.dispose()
    assert len(rows) == 1
    uid, predicted, drawn, correct = rows[0]
    assert (uid, predicted, drawn, bool(correct)) == (last["uid"], last["digit"], 7, last["digit"] == 7)
    assert "Traceback" not in server.log_text(), server.log_tail()
