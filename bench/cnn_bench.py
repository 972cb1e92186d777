"""Latency and throughput of the CNN through onnxruntime (what the API does), no torch needed.

    python bench/cnn_bench.py [--model PATH.onnx] [--runs 2000] [--batch 1000] [--mnist-dir DIR]

Prints the single-sample latency (median / p99 / mean over `--runs` real MNIST test images, one
`session.run` per image, `intra_op_num_threads=1` like the API) and the batch throughput with 1 and 2
threads. The machine's load average is printed too: the numbers only mean something next to it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from digitlab.models.onnx import make_session
from digitlab.models.registry import BUNDLED_DIR

ARTIFACT, INPUT_NAME, OUTPUT_NAME = "cnn.onnx", "input", "probabilities"


def _images(mnist_dir: Path | None, n: int) -> np.ndarray:
    """Real test digits when MNIST is at hand (DIGITLAB_MNIST_DIR), else random strokes-like noise."""
    try:
        from digitlab.data import load_mnist

        images, _ = load_mnist("test", directory=mnist_dir, download=False)
        x = images.reshape(-1, 784).astype(np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001 - a benchmark should still run without the dataset
        print(f"(MNIST not available: {exc}; using random inputs)")
        x = (np.random.default_rng(0).random((10_000, 784)) > 0.8).astype(np.float32)
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n])


def single_sample(model: Path, x: np.ndarray, runs: int) -> np.ndarray:
    session = make_session(Path(model).read_bytes(), threads=1)
    for i in range(min(200, runs)):  # warm-up
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})
    times = np.empty(runs)
    for i in range(runs):
        sample = x[i : i + 1]
        t = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: sample})
        times[i] = time.perf_counter() - t
    return times


def throughput(model: Path, x: np.ndarray, batch: int, threads: int, repeats: int = 3) -> float:
    session = make_session(Path(model).read_bytes(), threads=threads)
    session.run([OUTPUT_NAME], {INPUT_NAME: x[:batch]})
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch]})
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_DIR / ARTIFACT)
    parser.add_argument("--runs", type=int, default=2000, help="single-sample runs")
    parser.add_argument("--batch", type=int, default=1000, help="batch size for the throughput test")
    parser.add_argument("--images", type=int, default=10_000, help="images per throughput pass")
    parser.add_argument("--mnist-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    x = _images(args.mnist_dir, max(args.runs, args.images))
    import onnxruntime

    print(f"model {args.model} ({args.model.stat().st_size / 1e6:.2f} MB), onnxruntime {onnxruntime.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    times = single_sample(args.model, x, args.runs) * 1e3
    print(
        f"single sample (intra_op_num_threads=1, {args.runs} runs): median {np.median(times):.3f} ms, "
        f"p99 {np.percentile(times, 99):.3f} ms, mean {times.mean():.3f} ms, min {times.min():.3f} ms"
    )
    xs = x[: args.images]
    for threads in (1, 2):
        rate = throughput(args.model, xs, args.batch, threads)
        print(f"batch {args.batch}, {threads} thread(s): {rate:,.0f} images/s ({1e3 / rate:.3f} ms/image)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
