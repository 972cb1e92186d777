"""Training and validation drawings for the not-a-digit detector: positives (traced MNIST *training*
digits and style templates) and negatives, rendered and preprocessed exactly like the app's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from digitlab.detector.runtime import NOT_DIGIT
from digitlab.synth.datasets import MAX_PEN_RATIO, MIN_FIDELITY, scan_pen_ratio
from digitlab.synth.glyphs import STYLES
from digitlab.synth.negatives import NEGATIVE_KINDS, negative_strokes
from digitlab.synth.real_glyphs import REAL_STYLES, any_style_digit
from digitlab.synth.render import pen_variation, render, to_png
from digitlab.synth.shapes import uniform
from digitlab.synth.trace import stroke_fidelity, strokes_from_mnist

STYLE_SHARE = 0.35  #: share of style templates among the positives (rare styles as often as others)
#: styles of real handwriting (`real_glyphs.REAL_STYLES`) among the style templates: the one the detector took
#: for a non-digit (a slashed 0: 86 % flagged "not a digit" without it; the others 0 %). All of them lowered
#: the share of real mistakes the flag caught (held-out Semeion, svm 65 -> 56 %, random_forest 81 -> 74 %).
DETECTOR_REAL_STYLES = {name: REAL_STYLES[name] for name in ("0-slashed",)}
JITTER_SHARE = 0.2  #: share of training positives drawn with pen-speed width variation (robustness)
#: share of training positives given a `pen_variation` (jitter, hooks, coarse sampling, drift)
PEN_SHARE = 0.2
_STATE: dict[str, Any] = {}  # per-process: the MNIST digits to trace (inherited by forked workers)


def _traced(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, tries: int = 6):
    """(strokes, label) of a random digit of `images` whose trace can be trusted (drawn's rules)."""
    for _ in range(tries):
        k = int(rng.integers(len(images)))
        if scan_pen_ratio(images[k]) > MAX_PEN_RATIO:
            continue
        strokes = strokes_from_mnist(images[k])
        if strokes and stroke_fidelity(strokes, images[k]) >= MIN_FIDELITY:
            return strokes, int(labels[k])
    return None


def _to_input(strokes, rng, **render_kwargs) -> np.ndarray | None:
    """Render like the canvas, encode as PNG, preprocess like the API: uint8 (784,) or None if refused."""
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import to_mnist

    png = to_png(render(strokes, rng, **render_kwargs))
    try:
        x = to_mnist(png)
    except DigitlabError:
        return None
    return np.rint(np.asarray(x, np.float32).reshape(784) * 255.0).astype(np.uint8)


def _positive_item(seed: int, i: int) -> tuple[np.ndarray | None, int, str]:
    rng = np.random.default_rng([41, int(seed), int(i)])
    images, labels = _STATE.get("digits") or (None, None)
    got = None
    if images is not None and rng.random() >= _STATE.get("style_share", STYLE_SHARE):
        got = _traced(images, labels, rng)
    if got is not None:
        strokes, label = got
        kind = "traced"
    else:
        label = int(rng.integers(10))
        names = [n for n, (d, _, _) in {**STYLES, **DETECTOR_REAL_STYLES}.items() if d == label]
        kind = names[int(rng.integers(len(names)))]
        strokes = any_style_digit(label, rng, kind)
    if not _STATE.get("augment", True):
        return _to_input(strokes, rng), label, kind
    if rng.random() < PEN_SHARE:
        strokes = pen_variation(strokes, rng)
    jitter = uniform(rng, 0.1, 0.35) if rng.random() < JITTER_SHARE else 0.0
    return _to_input(strokes, rng, width_jitter=jitter), label, kind


def _negative_item(seed: int, i: int) -> tuple[np.ndarray | None, int, str]:
    rng = np.random.default_rng([43, int(seed), int(i)])
    kinds = _STATE.get("kinds") or tuple(NEGATIVE_KINDS)
    w = np.array([NEGATIVE_KINDS[k][1] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    images, labels = _STATE.get("digits") or (None, None)
    traced = (lambda r: _traced(images, labels, r)) if images is not None else None
    strokes = negative_strokes(kind, rng, traced)
    if not strokes:
        return None, NOT_DIGIT, kind
    return _to_input(strokes, rng), NOT_DIGIT, kind


def _run_items(args: tuple[str, int, int, int]) -> list[tuple[np.ndarray | None, int, str]]:
    role, seed, lo, hi = args
    fn = _positive_item if role == "pos" else _negative_item
    return [fn(seed, i) for i in range(lo, hi)]


def _render(
    role: str,
    count: int,
    seed: int,
    *,
    digits: tuple[np.ndarray, np.ndarray] | None,
    kinds: Sequence[str] | None = None,
    style_share: float = STYLE_SHARE,
    augment: bool = True,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X uint8 (n, 784), labels (n,), kinds) for items 0..count-1 of `role`; refused drawings dropped."""
    import multiprocessing

    _STATE.clear()
    _STATE.update(
        digits=digits, kinds=tuple(kinds) if kinds else None, style_share=style_share, augment=augment
    )
    chunk = 50
    tasks = [(role, seed, lo, min(lo + chunk, count)) for lo in range(0, count, chunk)]
    rows: list[tuple[np.ndarray | None, int, str]] = []
    try:
        if jobs > 1 and len(tasks) > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(jobs) as pool:
                for part in pool.imap(_run_items, tasks):
                    rows.extend(part)
                    if progress is not None:
                        progress(len(part))
        else:
            for t in tasks:
                part = _run_items(t)
                rows.extend(part)
                if progress is not None:
                    progress(len(part))
    finally:
        _STATE.clear()
    keep = [r for r in rows if r[0] is not None]
    X = np.stack([r[0] for r in keep]) if keep else np.zeros((0, 784), np.uint8)
    return X, np.array([r[1] for r in keep], dtype=np.int64), [r[2] for r in keep]


def render_positives(
    count: int,
    seed: int,
    *,
    digits=None,
    style_share: float = STYLE_SHARE,
    augment: bool = True,
    jobs: int = 1,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drawn digits through the API's preprocessing: (X uint8 (n, 784), labels, kind).

    `digits=(images28, labels)` are traced (MNIST *training* digits for the detector, never the test
    set); `style_share` of the drawings are style templates (kind = style name), the rest traced
    digits (kind "traced"). `augment` adds pen variation (`PEN_SHARE`, `JITTER_SHARE`) for training;
    validation sets are drawn without it, like the evaluation. Drawing i depends only on (seed, i).
    """
    return _render(
        "pos",
        count,
        seed,
        digits=digits,
        style_share=style_share if digits is not None else 1.0,
        augment=augment,
        jobs=jobs,
        progress=progress,
    )


def render_negatives(
    count: int, seed: int, *, digits=None, kinds: Sequence[str] | None = None, jobs: int = 1, progress=None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Non-digit drawings (NEGATIVE_KINDS) through the API's preprocessing: (X uint8, labels=10, kind).

    Drawings the preprocessing refuses (a few dots, ...) are left out: the API answers those with an
    error, not a digit.
    """
    return _render("neg", count, seed, digits=digits, kinds=kinds, jobs=jobs, progress=progress)
