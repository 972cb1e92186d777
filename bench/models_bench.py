"""Single-sample latency of every saved model, preloaded, as the API calls it.

    python bench/models_bench.py [--repeat 300]

Prints median and p99 of `predict_proba` on one MNIST test image (features included), the batch
cost per image, and the artefact size. Medians, because these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from digitlab.core.config import get_settings
from digitlab.data import DatasetError, load_mnist
from digitlab.models import MODEL_SPECS, ArtifactError, load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # as in the API: one BLAS thread per process
    settings = get_settings()
    try:
        X, _ = load_mnist("test", directory=settings.mnist_dir, limit=1000)
    except DatasetError as exc:  # one line, as the CLI says it
        raise SystemExit(f"error: {exc}") from None
    X = X.reshape(-1, 784).astype(np.float32) / 255.0
    table = Table(title=f"predict_proba, one image, {args.repeat} runs (ms)")
    for column in ("model", "median", "p99", "batch of 1000, per image", "artefact MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in MODEL_SPECS:
        try:
            model = load_model(name, settings.model_dir)
        except ArtifactError as exc:
            table.add_row(name, "-", "-", "-", f"not loaded: {exc}"[:40])
            continue
        model.predict_proba(X[:1])  # warm-up
        times = []
        for i in range(args.repeat):
            x = X[i % len(X) : i % len(X) + 1]
            started = time.perf_counter()
            model.predict_proba(x)
            times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        model.predict_proba(X)
        batch = (time.perf_counter() - started) * 1000 / len(X)
        table.add_row(
            name, f"{np.median(times):.2f}", f"{np.percentile(times, 99):.2f}", f"{batch:.3f}",
            f"{model.manifest['size_bytes'] / 1e6:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
