"""`digitlab train segment_verifier`: teach the number reader which candidate crops are one whole digit.

Numbers are composed from the `fit` part of the real handwriting (USPS and Semeion scans no benchmark
reads; `evaluation.numbers.number_samples(part="fit", owners=True)`), so every pixel's digit is known.
Each is segmented exactly as `/read` does; a candidate is *whole* when at least `OWN_SHARE` of its ink
is one digit's and it holds at least `COVERED` of that digit's ink (loose, because a straight cut between
overlapping digits leaves each crop a sliver of its neighbour: at 0.85 / 0.75 a quarter of the overlapping
numbers had no whole candidate for some digit, and the calibration numbers read 1 point worse). A small network
(`segment_verifier.SegmentVerifier`) learns that from the candidate's shape and geometry; the
calibration numbers (`evaluate --numbers --part calibration`) are read with the CNN with and without it,
so every rebuild says what it is worth.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from digitlab.evaluation.numbers import number_samples
from digitlab.segment import segmented
from digitlab.segment_pieces import INK_ON
from digitlab.segment_verifier import VERIFIER_NAME, SegmentVerifier
from digitlab.training.progress import Bar, log

OWN_SHARE = 0.7  #: a whole digit's crop: at least this share of its ink is one digit's...
COVERED = 0.6  #: ...and it holds at least this share of that digit's ink
HIDDEN = 64
SEED = 1  #: the compositions' seed (the benchmark's numbers use seed 0, on other digits)


def candidate_rows(image: bytes, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, whole 0/1) of every candidate `/read` would score in this composed number."""
    c = segmented(image)
    if c.factor > 1:  # the working image is the input reduced by `factor`: so is the owner map
        rows = np.minimum((np.arange(c.ink.shape[0]) * c.factor).astype(int), owner.shape[0] - 1)
        cols = np.minimum((np.arange(c.ink.shape[1]) * c.factor).astype(int), owner.shape[1] - 1)
        owner = owner[np.ix_(rows, cols)]
    owner = owner.astype(np.int16)
    digits = int(owner.max()) + 1
    total = np.bincount(owner[(c.ink >= INK_ON) & (owner >= 0)], minlength=max(digits, 1))
    whole = np.zeros(len(c.spans), np.int8)
    for k, (i, j) in enumerate(c.spans):
        ys = np.concatenate([p.ys for p in c.pieces[i:j]])
        xs = np.concatenate([p.xs for p in c.pieces[i:j]])
        own = owner[ys, xs]
        own = own[own >= 0]
        if len(own):
            counts = np.bincount(own, minlength=len(total))
            top = int(counts.argmax())
            whole[k] = counts[top] >= OWN_SHARE * len(own) and counts[top] >= COVERED * total[top]
    return c.verifier_features(), whole


def fit_verifier(
    count: int, *, seed: int = SEED, directory: Path | None = None, progress: bool = True
) -> tuple[SegmentVerifier, dict]:
    """Compose `count` numbers, collect their candidates, fit the network: (verifier, summary)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    samples = number_samples(count, seed=seed, directory=directory, part="fit", owners=True)
    features, labels = [], []
    with Bar(progress) as bar:
        advance = bar.task("segmenting composed numbers", len(samples))
        for sample in samples:
            try:
                f, y = candidate_rows(sample.image, sample.owner)
            except Exception:  # noqa: BLE001 -- a composition the reader refuses teaches nothing
                f, y = None, None
            if f is not None:
                features.append(f)
                labels.append(y)
            if advance:
                advance(1)
    X, y = np.concatenate(features), np.concatenate(labels)
    if len(np.unique(y)) < 2:
        raise ValueError("the composed numbers gave only one kind of candidate: compose more numbers")
    scaler = StandardScaler().fit(X)
    net = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,), alpha=1e-3, early_stopping=True, max_iter=200, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tiny test runs stop early; reported below
        net.fit(scaler.transform(X), y)
    verifier = SegmentVerifier(
        mean=scaler.mean_.astype(np.float32),
        scale=np.where(scaler.scale_ > 0, scaler.scale_, 1.0).astype(np.float32),
        w1=net.coefs_[0].astype(np.float32),
        b1=net.intercepts_[0].astype(np.float32),
        w2=net.coefs_[1].astype(np.float32),
        b2=float(net.intercepts_[1][0]),
    )
    summary = {
        "numbers": len(features),
        "candidates": len(y),
        "whole_share": round(float(y.mean()), 4),
        "validation_accuracy": round(float(net.best_validation_score_ or 0.0), 4),
    }
    return verifier, summary


def calibration_reading(verifiers: dict[str, SegmentVerifier | None], count: int, model_dir: Path) -> dict[str, float]:
    """Share of `count` calibration numbers the CNN reads right with each verifier (None: without one)."""
    from digitlab.detector.runtime import load_detector
    from digitlab.errors import DigitlabError
    from digitlab.models.registry import load_model
    from digitlab.segment import read_number

    model, detector = load_model("cnn", model_dir), load_detector(model_dir)
    samples = number_samples(count, part="calibration")
    right = dict.fromkeys(verifiers, 0)
    for sample in samples:
        for name, verifier in verifiers.items():
            try:
                right[name] += read_number(sample.image, model, detector, verifier=verifier).text == sample.text
            except DigitlabError:
                pass
    return {name: n / len(samples) for name, n in right.items()}


def train_segment_verifier_command(*, out_dir: Path | None = None, count: int = 3000, check: int = 500) -> int:
    """`digitlab train segment_verifier [--out DIR]`: fit, report on the calibration numbers, save."""
    from digitlab.core.config import get_settings
    from digitlab.models.artifacts import library_versions, save_artifact

    settings = get_settings()
    out = Path(out_dir) if out_dir is not None else settings.model_dir
    started = time.perf_counter()
    log(f"segment verifier: composing {count} numbers from the fit part of the real handwriting")
    verifier, summary = fit_verifier(count, directory=settings.handwriting_path)
    log(
        f"segment verifier: {summary['candidates']} candidates of {summary['numbers']} numbers, "
        f"{100 * summary['whole_share']:.1f} % whole; validation accuracy {100 * summary['validation_accuracy']:.1f} %"
    )
    if check:
        read = calibration_reading({"without": None, "with": verifier}, check, settings.model_dir)
        before, after = read["without"], read["with"]
        summary["calibration_numbers"] = {"count": check, "without": round(before, 4), "with": round(after, 4)}
        log(f"segment verifier: {check} calibration numbers read right by the cnn {100 * before:.1f} -> {100 * after:.1f} %")
    manifest = {
        "kind": "segment_verifier",
        "seed": SEED,
        "own_share": OWN_SHARE,
        "covered": COVERED,
        "hidden": HIDDEN,
        "training": summary,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": library_versions(),
    }
    save_artifact(out, VERIFIER_NAME, verifier.to_bytes(), "npz", manifest)
    log(f"segment verifier saved in {out} ({time.perf_counter() - started:.0f} s)")
    return 0
