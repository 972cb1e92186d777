"""Store fixtures: every store test runs on SQLite and on the real PostgreSQL (127.0.0.1:5432).

PostgreSQL databases are created per run with unique names (`digitlab_test_<hex>`) through the
`postgres` maintenance database and dropped afterwards; a missing server fails the run (never skips).
Nothing is mocked: the schema comes from the real migrations.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image
from sqlalchemy.engine import make_url

from digitlab.store import PredictionRecord, PredictionStore
from digitlab.store.db import make_engine, upgrade

PG_ADMIN_URL = os.environ.get(
    "DIGITLAB_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_admin() -> psycopg.Connection:
    return psycopg.connect(_conninfo(PG_ADMIN_URL), autocommit=True, connect_timeout=5)


class PgDatabases:
    """Throw-away PostgreSQL databases for this run, dropped at its end.

    Dropping a database that was written to costs a checkpoint (seconds on a busy machine), so tests that
    need an empty database share one scratch database, emptied by recreating its `public` schema."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._scratch: tuple[str, str] | None = None

    def create(self, *, create: bool = True) -> tuple[str, str]:
        """(url, name) of a new database; with create=False only the name is reserved (an absent DB)."""
        name = f"digitlab_test_{uuid.uuid4().hex[:8]}"
        if create:
            with pg_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False), name

    def scratch(self) -> tuple[str, str]:
        """(url, name) of an empty database that accepts connections."""
        if self._scratch is None:
            self._scratch = self.create()
            return self._scratch
        url, name = self._scratch
        with pg_admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return self._scratch

    def drop_all(self) -> None:
        with pg_admin() as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def admin_connect() -> Callable[[], psycopg.Connection]:
    """Connect to the maintenance database (autocommit) to create, block or drop test databases."""
    return pg_admin


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    try:
        pg_admin().close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is required for the store tests ({PG_ADMIN_URL}): {exc}", pytrace=False)
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def empty_url(backend, request, tmp_path) -> str:
    """An empty database (no tables) of the current backend, for migration and outage tests."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("pg_databases").scratch()[0]


@pytest.fixture
def absent_db(backend, request, tmp_path) -> tuple[str, Callable[[], None]]:
    """A URL whose database is away now, and a function that brings it (empty) into existence:
    SQLite in a folder that does not exist yet; a PostgreSQL database not created yet."""
    if backend == "sqlite":
        folder = tmp_path / "not-yet"
        return f"sqlite:///{folder / 'x.db'}", folder.mkdir
    url, name = request.getfixturevalue("pg_databases").create(create=False)

    def create() -> None:
        with pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    return url, create


@pytest.fixture(scope="session")
def shared_url(backend, request, tmp_path_factory) -> str:
    """One migrated database per backend for the whole run (creating one per test would be slow)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_databases").create()[0]
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def db_url(shared_url, backend) -> str:
    """The shared database, emptied, with ids starting at 1 again."""
    engine = make_engine(shared_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM pending_feedback")
        conn.exec_driver_sql("DELETE FROM read_numbers")
        conn.exec_driver_sql("DELETE FROM learn_jobs")
        if backend == "sqlite":
            conn.exec_driver_sql("DELETE FROM user_predictions")
            conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'user_predictions'")
        else:
            conn.exec_driver_sql("TRUNCATE user_predictions RESTART IDENTITY")
    engine.dispose()
    return shared_url


def _open_store(url: str, spool_dir: Path, **kwargs) -> PredictionStore:
    """A started store that retries the database quickly (tests wait for recoveries)."""
    kwargs = {"retry_initial": 0.05, "retry_max": 0.3, **kwargs}
    return PredictionStore(url, spool_dir, **kwargs).start()


@pytest.fixture
def open_store() -> Callable[..., PredictionStore]:
    return _open_store


@pytest.fixture
def store(db_url, tmp_path) -> Iterator[PredictionStore]:
    s = _open_store(db_url, tmp_path / "spool" / "me")
    yield s
    s.close()


@pytest.fixture
def make_record() -> Callable[..., PredictionRecord]:
    return record


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    return png28


def png28(digit: int, seed: int = 0) -> bytes:
    """A 28x28 greyscale PNG with a deterministic pattern (stands in for a processed drawing)."""
    rng = np.random.default_rng(seed * 10 + digit)
    img = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def record(predicted: int = 3, drawn: int | None = None, model: str = "svm", **kwargs) -> PredictionRecord:
    probs = [0.01] * 10
    probs[predicted] = 0.91
    return PredictionRecord(
        model_name=model, predicted_digit=predicted, probabilities=probs, drawn_digit=drawn, **kwargs
    )
