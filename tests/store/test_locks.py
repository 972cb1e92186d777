"""The learning lock (PostgreSQL, and SQLite's file lock where said): one run at a time, even when the lock's connection drops mid-run."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from digitlab.store import db
from digitlab.store.db import BusyError, exclusive, make_engine


def _terminate(admin_connect, pid: int) -> None:
    with admin_connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def engine(pg_databases):
    engine = make_engine(pg_databases.scratch()[0])
    yield engine
    engine.dispose()


def _pid(conn) -> int:
    return conn.scalar(text("SELECT pg_backend_pid()"))


def test_the_lock_is_taken_again_after_its_connection_dropped(engine, admin_connect, monkeypatch):
    """A network blip, a restart or `pg_terminate_backend` freed the lock on the server: a second run could
    start beside the first, and the first then failed on its unlock (exit 2 after promoting)."""
    monkeypatch.setattr(db, "KEEP_SECONDS", 0.1)
    with exclusive(engine, "digitlab learn", keep=True) as held:
        first = held.conn
        _terminate(admin_connect, _pid(first))
        _until(lambda: held.conn is not first)  # a new connection holds it again
        held.check()
        with engine.connect() as conn:
            holder = conn.scalar(text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND database"
                                      " = (SELECT oid FROM pg_database WHERE datname = current_database())"),
                                 {"k": db._LEARN_LOCK})  # fmt: skip  (another database's `learn` holds its own)
        assert holder == _pid(held.conn)
        with pytest.raises(BusyError, match="another digitlab learn is running"), exclusive(engine, "digitlab learn"):
            pass
    with exclusive(engine, "digitlab learn"):  # released at the end: the next run goes
        pass


def test_the_held_lock_beats_while_held_and_after_it_is_taken_again(engine, admin_connect, monkeypatch):
    """The run's heartbeat (`VersionStore.beat_job`): every check that finds the lock held, and at once when
    the lock is taken back after its connection dropped."""
    monkeypatch.setattr(db, "KEEP_SECONDS", 0.1)
    beats = []
    with exclusive(engine, "digitlab learn", keep=True) as held:
        held.beat = lambda: beats.append(held.conn)
        _until(lambda: len(beats) >= 3)
        first = held.conn
        _terminate(admin_connect, _pid(first))
        _until(lambda: beats[-1] is not first)  # beating on the new connection
        held.check()


def test_a_run_whose_lock_was_taken_meanwhile_stops(engine, admin_connect, monkeypatch):
    monkeypatch.setattr(db, "KEEP_SECONDS", 1.0)
    other = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        with exclusive(engine, "digitlab learn", keep=True) as held:  # leaving it raises nothing
            _terminate(admin_connect, _pid(held.conn))
            _until(lambda: other.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": db._LEARN_LOCK}))
            _until(lambda: held.lost)  # a second run holds it now
            with pytest.raises(BusyError, match="took over while this one's database connection was down"):
                held.check()
    finally:
        other.close()


def test_the_lock_connection_is_not_idle_in_a_transaction(engine):
    """It was "idle in transaction" for a whole run: a server's idle_in_transaction_session_timeout ended it."""
    with exclusive(engine, "digitlab learn", keep=True) as held:
        pid = _pid(held.conn)
        with engine.connect() as conn:
            state = conn.scalar(text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid})
    assert state == "idle"


def _holder(url: str, seconds: float):
    """Another process holding the learning lock for `seconds` (as the API's brief check for killed runs
    does, or a running `digitlab learn`)."""
    code = ("import time\nfrom digitlab.store.db import exclusive, make_engine\n"
            f"with exclusive(make_engine({url!r}), 'check'):\n"
            f"    print('locked', flush=True); time.sleep({seconds})")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_long_run_waits_out_a_brief_holder_but_not_a_long_one(dialect, pg_databases, tmp_path, monkeypatch):
    """A run started by "Learn now" met the API's check for killed runs (it holds the lock for milliseconds,
    while a replica polls the job) and gave up: "another digitlab learn is running", with nothing running."""
    url = pg_databases.scratch()[0] if dialect == "postgresql" else f"sqlite:///{tmp_path / 'd.db'}"
    engine = make_engine(url)
    monkeypatch.setattr(db, "WAIT_SECONDS", 3.0)
    brief = _holder(url, 1.0)
    try:
        with pytest.raises(BusyError), exclusive(engine, "digitlab learn"):  # without waiting: refused
            pass
        started = time.monotonic()
        with exclusive(engine, "digitlab learn", keep=True, wait=True):  # when the holder lets go
            pass
        assert time.monotonic() - started < 3.0
    finally:
        brief.kill()
        brief.wait()
    long = _holder(url, 60)
    try:
        started = time.monotonic()
        busy = pytest.raises(BusyError, match="another digitlab learn is running")
        with busy, exclusive(engine, "digitlab learn", keep=True, wait=True):
            pass
        assert time.monotonic() - started >= 3.0  # it waited, then gave up
    finally:
        long.kill()
        long.wait()
        engine.dispose()
