"""Acceptance 2, store level: PostgreSQL becomes unreachable for more than 10 s under continuous load.

The test database is made unreachable for real: `ALTER DATABASE ... ALLOW_CONNECTIONS false` and every
backend connected to it terminated (existing connections die mid-use, new ones are refused), then it is
allowed again. Every add() must succeed, and afterwards the table must hold exactly one row per record,
per writer in the order the records were added.
"""

from __future__ import annotations

import statistics
import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from tests.store.conftest import _conninfo

pytestmark = pytest.mark.postgres

OUTAGE_SECONDS = 10.5


def _block(admin_connect, name: str) -> None:
    with admin_connect() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _unblock(admin_connect, name: str) -> None:
    with admin_connect() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_no_record_lost_or_duplicated_across_a_database_outage(
    pg_databases, admin_connect, open_store, make_record, tmp_path
):
    url, name = pg_databases.scratch()
    store = open_store(url, tmp_path / "spool" / "api-1", retry_initial=0.2, retry_max=1.0)
    added: dict[int, list[tuple[str, str]]] = {0: [], 1: []}  # writer -> [(uid, stored)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            rec = make_record(i % 10, drawn=i % 10 if i % 4 == 0 else None, session_id=f"w{k}")
            t0 = time.monotonic()
            try:
                result = store.add(rec)
                if i % 7 == 0:  # feedback during the outage is spooled too
                    assert store.set_feedback_by_uid(rec.uid, (i + 1) % 10)
            except BaseException as exc:  # noqa: BLE001 - any failure is a failed prediction
                errors.append(exc)
            else:
                latencies.append(time.monotonic() - t0)
                added[k].append((rec.uid, result.stored))
            i += 1
            time.sleep(0.004)

    threads = [threading.Thread(target=writer, args=(k,)) for k in added]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        _block(admin_connect, name)
        blocked_at = time.monotonic()
        seen_unavailable = False
        while time.monotonic() - blocked_at < OUTAGE_SECONDS:
            time.sleep(0.5)
            seen_unavailable |= store.health()["database"] == "unavailable"
        _unblock(admin_connect, name)
        recovered_at = time.monotonic()  # load continues through the recovery ...
        while store.health() != {"database": "ok", "spool": 0} and time.monotonic() - recovered_at < 30:
            time.sleep(0.1)
        time.sleep(1.0)  # ... and after it
    finally:
        stop.set()
        for t in threads:
            t.join()

    try:
        assert errors == []
        assert seen_unavailable
        assert store.wait_drained(timeout=60)
        assert store.health() == {"database": "ok", "spool": 0}

        stored = [s for rows in added.values() for _, s in rows]
        summary = (
            f"outage test: {len(stored)} records, {stored.count('database')} to the database, "
            f"{stored.count('spool')} spooled; add() median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.0f} ms; last records: {[[s for _, s in rows[-3:]] for rows in added.values()]}"
        )
        print(summary)
        assert stored.count("spool") > 100 and stored.count("database") > 20, summary  # both paths used
        assert all(rows[-1][1] == "database" for rows in added.values()), summary  # recovered under load
        assert max(latencies) < 5 and statistics.median(latencies) < 0.25, summary  # never waits on the DB

        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, uid, session_id FROM user_predictions ORDER BY id")).all()
            n_distinct = conn.scalar(text("SELECT count(DISTINCT uid) FROM user_predictions"))
        expected = {uid for rows_ in added.values() for uid, _ in rows_}
        assert len(rows) == len(expected) == n_distinct  # one row per answered prediction
        assert {r.uid for r in rows} == expected  # ... and the same ones
        for k, records in added.items():  # per writer: table order == answer order
            assert [r.uid for r in rows if r.session_id == f"w{k}"] == [uid for uid, _ in records]
    finally:
        store.close()


def test_an_idle_outage_is_noticed_by_health(pg_databases, admin_connect, open_store, make_record, tmp_path):
    """No traffic when the database goes: /health notices, and the next add() goes straight to the spool."""
    url, name = pg_databases.scratch()
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        assert store.add(make_record()).stored == "database"
        _block(admin_connect, name)
        time.sleep(1.1)  # health probes at most once a second
        assert store.health()["database"] == "unavailable"
        assert store.add(make_record()).stored == "spool"  # straight to the spool: no database attempt first
        _unblock(admin_connect, name)
        assert store.wait_drained(timeout=30)
        assert store.count() == 2
    finally:
        store.close()


def test_a_read_only_database_is_an_outage_and_loses_nothing(
    pg_databases, admin_connect, open_store, make_record, tmp_path
):
    """A standby during a failover (read-only transactions): records and labels wait in the spool and are
    replayed once it is writable again (they were moved to rejected.jsonl and lost)."""
    url, name = pg_databases.scratch()
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        kept = store.add(make_record())
        with admin_connect() as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        record = make_record()
        assert store.add(record).stored == "spool"
        assert store.set_feedback_by_uid(record.uid, 4) is True  # queued with its record
        assert store.set_feedback(kept.id, 6) is True
        assert store.health()["database"] == "unavailable"
        with admin_connect() as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        assert store.wait_drained(timeout=30)
        assert store.count() == 2
        assert store.get_by_uid(record.uid).drawn_digit == 4
        assert store.get(kept.id).drawn_digit == 6
        assert not list((tmp_path / "spool").rglob("rejected*"))
    finally:
        store.close()


def test_a_locked_table_spools_within_seconds(pg_databases, admin_connect, open_store, make_record, tmp_path):
    """A table lock held elsewhere: the insert gives up after the lock timeout and the record is spooled
    (it waited for the whole lock: 36 s in the probe), then replayed when the lock goes."""
    url, _ = pg_databases.scratch()
    store = open_store(url, tmp_path / "spool" / "me")
    try:
        store.add(make_record())
        locker = psycopg.connect(_conninfo(url))
        locker.execute("LOCK TABLE user_predictions IN ACCESS EXCLUSIVE MODE")
        try:
            started = time.monotonic()
            result = store.add(make_record())
            waited = time.monotonic() - started
            assert result.stored == "spool"
            assert waited < 10, waited
        finally:
            locker.rollback()
            locker.close()
        assert store.wait_drained(timeout=30)
        assert store.count() == 2
    finally:
        store.close()


class _FreezingProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding while keeping every connection open: a frozen
    server or a paused container (connections accepted, nothing answered)."""

    def __init__(self, target_port: int = 5432):
        import socket

        self.target_port = target_port
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set() and not self.closed:
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.frozen.clear()
        self.server.close()


def test_a_frozen_database_spools_within_the_deadline_and_health_answers(
    pg_databases, open_store, make_record, tmp_path
):
    """A server that accepts connections and answers nothing: predictions hung for the whole stall and
    /health hung with them, saying "ok". Now the write is spooled after the deadline, health answers in
    seconds, and after the stall every record is stored exactly once."""
    from sqlalchemy.engine import make_url

    url, _ = pg_databases.scratch()
    proxy = _FreezingProxy()
    via_proxy = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
    store = open_store(via_proxy, tmp_path / "spool" / "me", write_deadline=2.0)
    try:
        first = store.add(make_record())
        assert first.stored == "database"
        proxy.frozen.set()
        started = time.monotonic()
        stuck = store.add(make_record())
        assert stuck.stored == "spool" and time.monotonic() - started < 6
        started = time.monotonic()
        assert store.health()["database"] == "unavailable" and time.monotonic() - started < 3
        assert store.add(make_record()).stored == "spool"  # straight to the spool now
        proxy.frozen.clear()
        assert store.wait_drained(timeout=60)
        assert store.count() == 3
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(DISTINCT uid) FROM user_predictions")) == 3
    finally:
        store.close()
        proxy.close()


def test_a_frozen_database_does_not_hang_feedback_or_reads(pg_databases, open_store, make_record, tmp_path):
    """Feedback by id and every read hung for as long as the server answered nothing (90 s and more in the
    probe). Now feedback is spooled and reads answer "unavailable" within seconds; the label lands after."""
    from sqlalchemy.engine import make_url

    from digitlab.store import DatabaseUnavailableError
    from digitlab.store.store import DIRECT_PATIENCE, HEALTH_PROBE_SECONDS

    url, _ = pg_databases.scratch()
    proxy = _FreezingProxy()
    via_proxy = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
    store = open_store(via_proxy, tmp_path / "spool" / "me", write_deadline=2.0)
    bound = DIRECT_PATIENCE + HEALTH_PROBE_SECONDS + 1.5
    try:
        first = store.add(make_record(7))
        assert first.stored == "database" and store.list()[1] == 1
        proxy.frozen.set()
        started = time.monotonic()
        assert store.set_feedback(first.id, 1) is True  # spooled
        assert time.monotonic() - started < bound
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            store.list()
        assert time.monotonic() - started < bound
        proxy.frozen.clear()
        assert store.wait_drained(timeout=60)
        assert store.get(first.id).drawn_digit == 1
    finally:
        store.close()
        proxy.close()


def test_writes_queued_behind_a_stuck_batch_are_spooled_within_the_deadline(
    pg_databases, open_store, make_record, tmp_path
):
    """Under load, predictions that queued while the writer's batch was stuck waited for the whole stall
    (12-28 s in the probe): only the batch being committed was failed at the deadline. Now every caller is
    answered (spooled) within the deadline, and after the stall each record is stored exactly once."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from sqlalchemy.engine import make_url

    url, _ = pg_databases.scratch()
    proxy = _FreezingProxy()
    via_proxy = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
    store = open_store(via_proxy, tmp_path / "spool" / "me", write_deadline=2.0)
    pool = ThreadPoolExecutor(8)
    try:
        assert store.add(make_record()).stored == "database"
        proxy.frozen.set()
        started = time.monotonic()
        first = pool.submit(store.add, make_record())  # the batch that gets stuck
        time.sleep(0.3)
        calls = [first, *(pool.submit(store.add, make_record()) for _ in range(7))]  # queued behind it
        done, _ = wait(calls, timeout=8)
        waited = time.monotonic() - started
        assert len(done) == 8, f"{8 - len(done)} of 8 callers still waiting after {waited:.1f} s of a frozen database"
        assert [c.result().stored for c in calls] == ["spool"] * 8
        assert waited < 5.5, f"callers waited {waited:.1f} s with the database frozen"
        proxy.frozen.clear()
        assert store.wait_drained(timeout=60)
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM user_predictions")) == 9
            assert conn.scalar(text("SELECT count(DISTINCT uid) FROM user_predictions")) == 9
    finally:
        proxy.frozen.clear()  # (lets stuck callers finish)
        pool.shutdown(wait=True)
        store.close()
        proxy.close()


def test_health_says_catching_up_while_the_spool_is_replayed(absent_db, open_store, make_record, tmp_path, monkeypatch):
    """Under load /health said `unavailable` for ~20 s after the database was back, until the spool had caught up
    (a probe, session 27): while its lines are written it says `catching_up`, then `ok` with `spool: 0`."""
    import time

    url, bring_back = absent_db
    store = open_store(url, tmp_path / "spool" / "me", batch_size=1)
    try:
        for d in range(30):
            assert store.add(make_record(d % 10)).stored == "spool"
        assert store.health()["database"] == "unavailable"
        replay = store._drain_batch

        def slowly(spool):
            time.sleep(0.05)
            return replay(spool)

        monkeypatch.setattr(store, "_drain_batch", slowly)
        bring_back()
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.append(store.health()["database"])
            if seen[-1] == "ok":
                break
            time.sleep(0.02)
        assert "catching_up" in seen and seen[-1] == "ok", sorted(set(seen))
        assert store.health() == {"database": "ok", "spool": 0}
    finally:
        store.close()
