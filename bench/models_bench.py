"""Single-sample latency of every saved model, preloaded, as the API calls it.

    python bench/models_bench.py [--repeat 300]

Prints median and p99 of `predict_proba` on one MNIST test image (features included), the batch
cost per image, and the artefact size; then the "not sure" rule's cost for one image when the model's
own confidence does not decide (`is_uncertain`: the detector, the CNN's second opinion, the shape rules).
Medians, because these machines are shared and noisy.
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
    _flag_cost(X, args.repeat)


def _flag_cost(X: np.ndarray, repeat: int) -> None:
    """`is_uncertain` for an answer the model doubts (0.1 each): the whole rule runs, as for a hard drawing."""
    from digitlab.detector.runtime import load_detector

    detector = load_detector(get_settings().model_dir)
    proba = np.full(10, 0.1)
    table = Table(title=f"is_uncertain, one image, the whole rule, {repeat} runs (ms)")
    for column in ("model", "median", "p99"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in MODEL_SPECS:
        detector.is_uncertain(name, X[0].reshape(28, 28), proba)  # warm-up
        times = []
        for i in range(repeat):
            started = time.perf_counter()
            detector.is_uncertain(name, X[i % len(X)].reshape(28, 28), proba)
            times.append((time.perf_counter() - started) * 1000)
        table.add_row(name, f"{np.median(times):.2f}", f"{np.percentile(times, 99):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
