"""Migrations: from empty, from the original app's table with rows in it, and model == migrated schema."""

from __future__ import annotations

import json

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from digitlab.store import PredictionStore
from digitlab.store.db import current_revision, downgrade, head_revision, make_engine, upgrade
from digitlab.store.models import Base

# The original app's DDL, verbatim.
ORIGINAL_DDL = """
CREATE TABLE IF NOT EXISTS user_predictions (
    id SERIAL PRIMARY KEY,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    model_name VARCHAR(64),
    drawn_digit INTEGER,
    predicted_digit INTEGER,
    probability FLOAT,
    probabilities TEXT,
    correct BOOLEAN,
    background_color VARCHAR(16),
    pen_color VARCHAR(16)
)
"""
ORIGINAL_INSERT = text(
    "INSERT INTO user_predictions (model_name, drawn_digit, predicted_digit, probability, probabilities, "
    "correct, background_color, pen_color) VALUES (:m, :d, :p, :prob, :probs, :c, :bg, :pen)"
)
NEW_COLUMNS = {"uid", "model_version", "latency_ms", "session_id", "source", "image_png", "processed_png"}


def _original_rows(n: int = 3) -> list[dict]:
    return [
        {
            "m": "cnn",
            "d": i,
            "p": (i + (i % 2)) % 10,
            "prob": 0.5 + i / 100,
            "probs": json.dumps([0.1] * 10),
            "c": i % 2 == 0,
            "bg": "#000000",
            "pen": "#FFFFFF",
        }
        for i in range(n)
    ]


def test_upgrade_from_empty_matches_the_model(empty_url):
    engine = make_engine(empty_url)
    try:
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert {"ix_user_predictions_uid", "ix_user_predictions_stats"} <= {
            ix["name"] for ix in inspect(engine).get_indexes("user_predictions")
        }
    finally:
        engine.dispose()


def test_upgrade_keeps_the_original_table_and_its_rows(empty_url, tmp_path, make_record):
    url = empty_url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(ORIGINAL_DDL))
            conn.execute(ORIGINAL_INSERT, _original_rows())
            before = conn.execute(text("SELECT * FROM user_predictions ORDER BY id")).all()
        assert current_revision(engine) is None

        upgrade(engine)

        columns = {c["name"] for c in inspect(engine).get_columns("user_predictions")}
        assert NEW_COLUMNS <= columns
        with engine.begin() as conn:
            original_cols = ", ".join(before[0]._fields)
            after = conn.execute(text(f"SELECT {original_cols} FROM user_predictions ORDER BY id")).all()
            # every row and value preserved. Ids too on PostgreSQL; on SQLite `id SERIAL` is not
            # auto-numbered (the rows have id NULL) and the migration numbers them in insertion order.
            assert [r[1:] for r in after] == [r[1:] for r in before]
            assert [r[0] for r in after] == [1, 2, 3]
            if conn.dialect.name == "postgresql":
                assert after == before
            conn.execute(ORIGINAL_INSERT, _original_rows(1))  # the original app's SQL still works
            ids = [r[0] for r in conn.execute(text("SELECT id FROM user_predictions ORDER BY id"))]
        assert ids == [1, 2, 3, 4]
    finally:
        engine.dispose()

    store = PredictionStore(url, tmp_path / "spool").start()
    try:
        result = store.add(make_record(7))
        assert (result.stored, result.id) == ("database", 5)
        assert store.list(page_size=10)[1] == 5
        legacy = store.get(1)
        assert (legacy.model_name, legacy.drawn_digit, legacy.correct, legacy.uid) == ("cnn", 0, True, None)
        assert legacy.probabilities == [0.1] * 10
        assert store.stats()["cnn"]["labelled"] == 4
    finally:
        store.close()


def test_deleting_the_newest_row_does_not_reuse_its_id(store, make_record):
    """SERIAL never hands out an id twice; SQLite needs AUTOINCREMENT for the same guarantee."""
    first = store.add(make_record()).id
    second = store.add(make_record()).id
    assert store.delete(second)
    third = store.add(make_record()).id
    assert first < second < third


def test_downgrade_and_upgrade_again(empty_url):
    engine = make_engine(empty_url)
    try:
        upgrade(engine)
        assert downgrade(engine, "0001") == "0001"
        columns = {c["name"] for c in inspect(engine).get_columns("user_predictions")}
        assert not NEW_COLUMNS & columns
        assert upgrade(engine) == head_revision()
    finally:
        engine.dispose()


def _upgrade_in_child(url: str, barrier, results) -> None:
    engine = make_engine(url)
    try:
        barrier.wait(timeout=60)  # all at once, like workers started together
        results.put(upgrade(engine))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def test_processes_migrating_one_new_sqlite_file_at_once_all_succeed(tmp_path):
    """`serve --workers 4` on a fresh file: every worker migrates at start-up, at the same moment."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    barrier, results = ctx.Barrier(4), ctx.Queue()
    children = [ctx.Process(target=_upgrade_in_child, args=(url, barrier, results)) for _ in range(4)]
    for child in children:
        child.start()
    revisions = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert revisions == [head_revision()] * 4
