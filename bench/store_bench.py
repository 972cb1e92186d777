"""Prediction store benchmark: 10,000 stored predictions, median latency of the store's operations.

    python bench/store_bench.py                 # SQLite (temporary file) and PostgreSQL (temporary database)
    python bench/store_bench.py --url URL ...   # only these databases (scratch ones: rows are added, then
                                                # removed again; the schema is migrated first)

Targets (issue acceptance 3): history page <= 50 ms, stats <= 200 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from digitlab.store import PredictionRecord, PredictionStore
from digitlab.store.models import TABLE

PG_ADMIN = os.environ.get("DIGITLAB_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MODELS = ["svm", "knn", "cnn"]
BENCH_SESSION = "store-bench"
TARGETS = {"history page": 50.0, "stats": 200.0}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def make_records(n: int, seed: int = 0) -> list[PredictionRecord]:
    """Realistic rows: a ~280x280 drawing PNG (a few KB), a 28x28 PNG, 70 % labelled, 60 days."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((280, 280), dtype=np.uint8)
    for _ in range(12):  # a few thick strokes, compressed like a real canvas drawing
        y, x = rng.integers(40, 240, size=2)
        canvas[y - 12 : y + 12, x - 40 : x + 40] = 255
    drawing = _png(canvas)
    processed = [_png(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)) for _ in range(50)]
    now = datetime.now(UTC)
    records = []
    for i in range(n):
        predicted = int(rng.integers(10))
        probs = rng.dirichlet(np.ones(10)).tolist()
        drawn = (predicted if rng.random() < 0.9 else int(rng.integers(10))) if rng.random() < 0.7 else None
        records.append(
            PredictionRecord(
                model_name=MODELS[i % 3],
                model_version="1.0.0",
                predicted_digit=predicted,
                probabilities=probs,
                drawn_digit=drawn,
                pen_color="#FFFFFF",
                background_color="#000000",
                image_png=drawing,
                processed_png=processed[i % 50],
                latency_ms=float(rng.uniform(2, 40)),
                session_id=BENCH_SESSION,
                source="ui",
                timestamp=now - timedelta(days=60 * (n - i) / n),
            )
        )
    return records


def median_ms(fn, repeat: int) -> float:
    fn()  # warm up (plans, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench(url: str, rows: int, repeat: int, spool_dir: Path) -> dict[str, float]:
    store = PredictionStore(url, spool_dir).start()
    if store.health()["database"] != "ok":
        raise SystemExit(f"cannot reach {url}")
    try:
        records = make_records(rows)
        t0 = time.perf_counter()
        for i in range(0, rows, 500):
            with store.engine.begin() as conn:
                store.repo.insert_missing(conn, records[i : i + 500])
        load_s = time.perf_counter() - t0
        if store.engine.dialect.name == "postgresql":
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE user_predictions"))  # what autovacuum does after a bulk load
        some_id = store.list(page=rows // 100)[0][0].id
        since = datetime.now(UTC) - timedelta(days=7)
        extra = make_records(repeat + 1, seed=1)
        results = {
            "bulk load (rows/s)": rows / load_s,
            "add() one prediction": median_ms(lambda: store.add(extra.pop()), repeat),
            "history page": median_ms(lambda: store.list(page=1, page_size=50), repeat),
            "history page 100": median_ms(lambda: store.list(page=100, page_size=50), repeat),
            "history model+correct": median_ms(lambda: store.list(model="svm", correct=True), repeat),
            "history last 7 days": median_ms(lambda: store.list(since=since), repeat),
            "stats": median_ms(store.stats, repeat),
            "stats one model": median_ms(lambda: store.stats("cnn"), repeat),
            "get": median_ms(lambda: store.get(some_id), repeat),
            "get_image": median_ms(lambda: store.get_image(some_id), repeat),
        }
        with store.engine.begin() as conn:
            total = conn.scalar(text("SELECT count(*) FROM user_predictions"))
            conn.execute(TABLE.delete().where(TABLE.c.session_id == BENCH_SESSION))
        results["rows"] = total
        return results
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", action="append", help="database URL to benchmark (repeatable)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30, help="runs per operation (median reported)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="digitlab-bench-"))
    targets: list[tuple[str, str]] = []
    created_pg = None
    if args.url:
        targets = [(make_url(u).get_backend_name(), u) for u in args.url]
    else:
        targets.append(("sqlite", f"sqlite:///{tmp / 'bench.db'}"))
        import psycopg

        admin = make_url(PG_ADMIN).set(drivername="postgresql").render_as_string(hide_password=False)
        created_pg = f"digitlab_bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{created_pg}"')
            targets.append(
                (
                    "postgresql",
                    make_url(PG_ADMIN).set(database=created_pg).render_as_string(hide_password=False),
                )
            )
        except psycopg.Error as exc:
            print(f"PostgreSQL skipped ({exc.__class__.__name__}: {str(exc).strip()})", file=sys.stderr)
            created_pg = None

    results = {}
    try:
        for i, (name, url) in enumerate(targets):
            label = name if sum(1 for n, _ in targets if n == name) == 1 else f"{name}#{i + 1}"
            print(f"benchmarking {label} with {args.rows} rows ...", file=sys.stderr)
            results[label] = bench(url, args.rows, args.repeat, tmp / f"spool-{i}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_pg:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created_pg}" WITH (FORCE)')

    labels = list(results)
    ops = [k for k in next(iter(results.values())) if k != "rows"]
    print(f"\nPrediction store, {args.rows} stored predictions, median of {args.repeat} runs (ms)\n")
    print(f"| {'operation':<24} | " + " | ".join(f"{lb:>10}" for lb in labels) + " | target |")
    print(f"|{'-' * 26}|" + "|".join("-" * 12 for _ in labels) + "|--------|")
    ok = True
    for op in ops:
        cells = []
        for lb in labels:
            v = results[lb][op]
            cells.append(f"{v:>10.0f}" if op.startswith("bulk") else f"{v:>10.2f}")
            if op in TARGETS and v > TARGETS[op]:
                ok = False
        target = f"<= {TARGETS[op]:.0f}" if op in TARGETS else ""
        print(f"| {op:<24} | " + " | ".join(cells) + f" | {target:>6} |")
    counts = ", ".join(f"{lb} {results[lb]['rows']}" for lb in labels)
    print(f"\nrows in the table while measuring: {counts}")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
