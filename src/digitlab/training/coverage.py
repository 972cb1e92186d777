"""Training data for the styles people really draw, added to MNIST for every model.

MNIST's writers rarely draw a one-stroke open 4, a hooked 9 or a long-flag 1, and models trained on
MNIST alone lose those to 5, 3 and 7 on real handwriting (`digitlab evaluate --real`). Two sources:

- **style drawings**: the parametric styles of `synth.glyphs.STYLES` and `synth.real_glyphs`, drawn
  with the canvas pen and seen through `preprocess.to_mnist`; the rare ones weighted up
  (`STYLE_WEIGHT`);
- **real handwriting that is not held out**: USPS train and Semeion's first writer groups
  (`evaluation.real`, part "fit"), shown as the app receives them (`REAL_VIEWS`). Skipped, with a
  note in the log, when the files are not there;
- for the classical models (no on-the-fly augmentation of their own), also **distorted copies** of those
  scans (`synth.distort`, `REAL_VARIANTS` per scan), seen as uploads.

The shares were chosen by measurement on the held-out real handwriting (docs/real.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from digitlab.processes import fork_pool
from digitlab.training.augment import save_npz
from digitlab.training.progress import log

STYLE_COUNT = 8_000  #: style drawings added to the 60k MNIST images
CHUNK = 500
#: weight of a style within its digit: ordinary styles 1, MNIST-rare and real-handwriting styles more
STYLE_WEIGHT = {"ordinary": 1.0, "rare": 2.0, "real": 2.0}
#: how USPS train / Semeion fit are shown to the models when trained on
REAL_VIEWS = {
    "usps": ("black-on-white", "pen-redrawn"),
    "semeion": ("upload", "black-on-white", "white-on-black", "colour-on-transparent", "pen-redrawn"),
}
#: distorted copies per USPS train / Semeion fit scan for the classical models (chosen on the calibration
#: part: Semeion svm 93.6 -> 96.6 %, extra_trees 89.3 -> 92.2 % with 10 copies, USPS unchanged)
REAL_VARIANTS = {"usps": 2, "semeion": 20}
VARIANT_SEED = 1


def style_table() -> dict[int, tuple[list[str], np.ndarray]]:
    """digit -> (style names, probabilities) over both style tables."""
    from digitlab.synth.glyphs import RARE_STYLES, STYLES
    from digitlab.synth.real_glyphs import REAL_STYLES

    table: dict[int, tuple[list[str], np.ndarray]] = {}
    for digit in range(10):
        names = [n for n, (d, _, _) in {**STYLES, **REAL_STYLES}.items() if d == digit]
        kinds = ["real" if n in REAL_STYLES else "rare" if n in RARE_STYLES else "ordinary" for n in names]
        w = np.array([STYLE_WEIGHT[k] for k in kinds])
        table[digit] = (names, w / w.sum())
    return table


def _style_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import to_mnist
    from digitlab.synth.real_glyphs import any_style_digit
    from digitlab.synth.render import render

    count, seed, chunk = args
    table = style_table()
    out, kept = [], []
    for i in range(count):
        rng = np.random.default_rng([int(seed), chunk, i, 15])
        digit = int(rng.integers(10))
        names, p = table[digit]
        strokes = any_style_digit(digit, rng, names[int(rng.choice(len(names), p=p))])
        try:
            out.append(np.rint(to_mnist(render(strokes, rng)) * 255).astype(np.uint8))
            kept.append(digit)
        except DigitlabError:  # a rendering the app would refuse teaches nothing
            continue
    return np.asarray(out, np.uint8).reshape(-1, 28, 28), np.asarray(kept, np.uint8)


def style_training_set(
    count: int, seed: int = 0, *, jobs: int | None = None, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`count` style drawings as (uint8 (n, 28, 28), uint8 labels); the same for the same seed; cached."""
    cache = Path(cache_dir) / f"style_train_{count}_{seed}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            return data["images"], data["labels"]
    tasks = [(min(CHUNK, count - lo), seed, i) for i, lo in enumerate(range(0, count, CHUNK))]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    with fork_pool(jobs) as pool:
        parts = list(pool.map(_style_chunk, tasks))
    X = np.concatenate([x for x, _ in parts]) if parts else np.zeros((0, 28, 28), np.uint8)
    y = np.concatenate([y for _, y in parts]) if parts else np.zeros(0, np.uint8)
    if cache is not None:
        save_npz(cache, images=X, labels=y)
    return X, y


def real_training_set(
    handwriting_dir: Path,
    *,
    jobs: int | None = None,
    cache_dir: Path | None = None,
    repeat: Mapping[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The non-held-out real handwriting in `REAL_VIEWS`, preprocessed; None when the files are missing.

    `repeat`: set -> how many times its images go in (1 for a set not named): a weight for a learner
    that has no sample weights (the CNN).
    """
    from digitlab.evaluation.real import HandwritingError, prepared_part

    images, labels = [], []
    for name, views in REAL_VIEWS.items():
        try:
            data = prepared_part(name, "fit", handwriting_dir, views=views, jobs=jobs, cache_dir=cache_dir)
        except HandwritingError as exc:
            log(f"real handwriting not used for training ({exc})")
            return None
        ok = data["status"] == 1
        times = (repeat or {}).get(name, 1)
        images += [data["X"][ok].reshape(-1, 28, 28)] * times
        labels += [data["labels"][ok].astype(np.uint8)] * times
    return np.concatenate(images), np.concatenate(labels)


def _variant_chunk(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import to_mnist
    from digitlab.synth.distort import distort_scan

    images, labels, copies, seed, first = args
    out, kept = [], []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rng = np.random.default_rng([int(seed), first + i, 17])
        for _ in range(copies):
            try:
                out.append(np.rint(to_mnist(distort_scan(image, rng)) * 255).astype(np.uint8))
                kept.append(label)
            except DigitlabError:  # bent into a speck or a dot: the app would refuse it too
                continue
    return np.asarray(out, np.uint8).reshape(-1, 28, 28), np.asarray(kept, np.uint8)


def variants_of(
    images: np.ndarray, labels: np.ndarray, copies: int, seed: int = VARIANT_SEED, *, jobs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`copies` distorted copies of each scan (uint8 (n, h, w), ink bright), preprocessed like an upload:
    (uint8 (m, 28, 28), uint8 labels), m <= n * copies; the same for the same seed, however many jobs."""
    tasks = [(images[lo : lo + CHUNK // 10], labels[lo : lo + CHUNK // 10], copies, seed, lo)
             for lo in range(0, len(images), CHUNK // 10)]  # fmt: skip
    if not tasks or copies <= 0:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    if jobs == 1:
        parts = [_variant_chunk(t) for t in tasks]
    else:
        with fork_pool(jobs) as pool:
            parts = list(pool.map(_variant_chunk, tasks))
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def real_variant_set(
    handwriting_dir: Path,
    copies: Mapping[str, int],
    *,
    jobs: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Distorted copies of the non-held-out real handwriting (`copies` per scan of each set), cached;
    None when the files are missing."""
    from digitlab.evaluation.real import HandwritingError, load_part

    images, labels = [], []
    for name, n in copies.items():
        cache = Path(cache_dir) / f"real_variants_{name}_fit_{n}_{VARIANT_SEED}.npz" if cache_dir else None
        if cache is not None and cache.exists():
            with np.load(cache) as data:
                images.append(data["images"])
                labels.append(data["labels"])
            continue
        try:
            scans, digits = load_part(name, "fit", handwriting_dir)
        except HandwritingError as exc:
            log(f"distorted real handwriting not used for training ({exc})")
            return None
        X, y = variants_of(scans, digits.astype(np.uint8), n, jobs=jobs)
        if cache is not None:
            save_npz(cache, images=X, labels=y)
        images.append(X)
        labels.append(y)
    if not images:
        return None
    return np.concatenate(images), np.concatenate(labels)


def coverage_set(
    settings,
    *,
    limit: int | None = None,
    jobs: int | None = None,
    real_repeat: Mapping[str, int] | None = None,
    real_variants: Mapping[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Style drawings plus real handwriting for training: (uint8 (n, 28, 28), uint8 labels, summary).

    With `limit` (quick runs, tests) the style drawings shrink to a third of it and real handwriting
    is left out. `real_repeat`: see `real_training_set`; `real_variants`: distorted copies per scan
    (`REAL_VARIANTS` for the classical models).
    """
    started = time.perf_counter()
    cache_dir = settings.data_dir / "cache"
    count = STYLE_COUNT if limit is None else min(STYLE_COUNT, max(limit // 3, 100))
    log(f"coverage: rendering {count} style drawings")
    X, y = style_training_set(count, jobs=jobs, cache_dir=cache_dir)
    summary = {"style_drawings": len(y), "real_handwriting": 0}
    if limit is None:
        log("coverage: real handwriting that is not held out (USPS train, Semeion fit part)")
        found = real_training_set(
            settings.handwriting_path, jobs=jobs, cache_dir=cache_dir, repeat=real_repeat
        )
        if found is not None:
            X, y = np.concatenate([X, found[0]]), np.concatenate([y, found[1]])
            summary["real_handwriting"] = len(found[1])
            if real_repeat:
                summary["real_repeat"] = dict(real_repeat)
        if real_variants and found is not None:
            log(f"coverage: distorted copies of that handwriting ({', '.join(f'{n} x{k}' for n, k in real_variants.items())})")
            bent = real_variant_set(settings.handwriting_path, real_variants, jobs=jobs, cache_dir=cache_dir)
            if bent is not None:
                X, y = np.concatenate([X, bent[0]]), np.concatenate([y, bent[1]])
                summary["real_variants"] = len(bent[1])
                summary["real_variant_copies"] = dict(real_variants)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return X, y, summary
