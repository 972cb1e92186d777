"""Training digits as a person draws them on the canvas, seen through the app's own preprocessing.

MNIST scans differ from canvas drawings (pen width, size, slant, colour, styles such as a crossed 7
that MNIST rarely has). Re-drawing MNIST *training* digits with a random pen (and the parametric
rare styles of `digitlab.synth.glyphs`) and passing them through `preprocess.to_mnist` gives training
samples from the distribution the models meet in production. Never uses the MNIST test set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from digitlab.processes import fork_pool

CHUNK = 500


def _render_chunk(args: tuple[int, int, int, Path | None]) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.data import load_mnist
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import to_mnist
    from digitlab.synth.datasets import drawn_dataset

    count, seed, chunk, mnist_dir = args
    digits = load_mnist("train", directory=mnist_dir)
    images, labels, _ = drawn_dataset(count, seed=seed * 100_003 + chunk, source="mixed", digits=digits)
    out, kept = [], []
    for image, label in zip(images, labels):
        try:
            out.append(np.rint(to_mnist(image) * 255).astype(np.uint8))
            kept.append(label)
        except DigitlabError:  # a rendering the app would refuse (e.g. a dot) teaches nothing
            continue
    return np.asarray(out, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(kept, dtype=np.uint8)


def drawn_training_set(
    count: int,
    seed: int = 0,
    *,
    mnist_dir: Path | None = None,
    jobs: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`count` re-drawn training digits as (uint8 (n, 28, 28), uint8 labels); cached in `cache_dir`."""
    cache = Path(cache_dir) / f"drawn_train_{count}_{seed}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            return data["images"], data["labels"]
    started = time.perf_counter()
    tasks = [(min(CHUNK, count - lo), seed, i, mnist_dir) for i, lo in enumerate(range(0, count, CHUNK))]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    images, labels = [], []
    with fork_pool(jobs) as pool:
        for done, (x, y) in enumerate(pool.map(_render_chunk, tasks), start=1):
            images.append(x)
            labels.append(y)
            print(
                f"\r[augment] drawn training digits {min(done * CHUNK, count)}/{count}",
                end="", file=sys.stderr, flush=True,
            )
    X, Y = np.concatenate(images), np.concatenate(labels)
    print(f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    if cache is not None:
        save_npz(cache, images=X, labels=Y)
    return X, Y


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed .npz atomically (a cache that is there is whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
