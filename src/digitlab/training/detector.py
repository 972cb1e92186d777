"""Training and calibrating the not-a-digit detector (`digitlab train detector [--calibrate-only]`).

An sklearn MLP on detector features of synthetic positives and negatives; the thresholds are chosen
on a separate validation set so that few correct answers are flagged (see docs/uncertainty.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.detector.features import N_FEATURES, N_STATS, detector_features
from digitlab.detector.runtime import (
    CLIP,
    DEFAULT_T_MODEL_KEY,
    DETECTOR_NAME,
    NOT_DIGIT,
    UncertaintyDetector,
    detector_dir,
    from_payload,
    pack,
    standardise,
    unpack,
)
from digitlab.evaluation.flags import flag_rates
from digitlab.synth.detector_sets import STYLE_SHARE, render_negatives, render_positives
from digitlab.synth.negatives import NEGATIVE_KINDS
from digitlab.training.progress import Bar, log

#: the detector alone flags this share of the validation digits ...
DETECTOR_SHARE = 0.006
#: ... and each model's top-probability threshold at most this share of its other correct answers:
#: at most ~0.8 % of correct validation answers flagged per model, well under the 3 % bar, because
#: fresh digits (other writers, other seeds) come out ~1.5x higher than the validation set (measured)
MODEL_SHARE = 0.002


def _max_threshold(conf_correct: np.ndarray, budget: int) -> float:
    """The largest t with #(conf_correct < t) <= budget (t is a value in the data or 0)."""
    if budget < 0 or len(conf_correct) == 0:
        return 0.0
    s = np.sort(conf_correct)
    if budget >= len(s):
        return 1.0
    return float(s[budget])  # conf < s[budget] is true for at most `budget` values


HIDDEN = 256  #: hidden units of the detector's MLP
ALPHA = 1e-3  #: L2 penalty
VAL_SEED_OFFSET = (
    9000  #: validation drawings use seed + this (training: seed; `digitlab evaluate --drawn`: 0)
)
VAL_COUNT = 4000  #: validation digits (and as many non-digits)
#: real handwriting among the training digits, per set, at most (scan, view) pairs of the 'fit' parts
#: (never the calibration part or the held-out benchmark): odd but real styles, Semeion's scans
#: stretched to the box and USPS's thick strokes, stop looking like scribbles to the detector
REAL_POSITIVES = {"usps": 3000, "semeion": 3000}


def _mnist_digits(split: str, mnist_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.data import load_mnist

    images, labels = load_mnist(split, directory=mnist_dir)
    return np.asarray(images), np.asarray(labels)


def real_positives(
    handwriting_dir: Path | None, seed: int, *, jobs: int | None = None, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Up to `REAL_POSITIVES` preprocessed real digits per set (X uint8 (n, 784), labels, kinds).

    The 'fit' parts in the views the classical models train on (`coverage.REAL_VIEWS`, the same cache);
    a seeded sample when a set has more. None (and a note in the log) when the files are not there.
    """
    if handwriting_dir is None:
        return None
    from digitlab.evaluation.real import HandwritingError, prepared_part
    from digitlab.training.coverage import REAL_VIEWS

    X, y, kinds = [], [], []
    for name, limit in REAL_POSITIVES.items():
        try:
            part = prepared_part(
                name, "fit", handwriting_dir, views=REAL_VIEWS[name], jobs=jobs, cache_dir=cache_dir
            )
        except HandwritingError as exc:
            log(f"detector: real handwriting not among the training digits ({exc})")
            return None
        ok = np.flatnonzero(part["status"] == 1)
        if len(ok) > limit:
            ok = np.sort(np.random.default_rng([int(seed), 43]).choice(ok, limit, replace=False))
        X.append(part["X"][ok])
        y.append(part["labels"][ok].astype(np.int64))
        kinds += [f"real-{name}"] * len(ok)
    return np.vstack(X), np.concatenate(y), kinds


def validation_set(
    seed: int = 0,
    count: int = VAL_COUNT,
    *,
    mnist_dir: Path | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The drawings the thresholds are chosen on (never trained on, never the evaluation's seeds).

    Digits: MNIST *test* digits with an odd index (other writers than the training set's) traced and
    drawn like `drawn_dataset`, 20 % style templates, no augmentation. Non-digits: half
    `scribbles`-like, half every other kind of `NEGATIVE_KINDS`. Seed `seed + VAL_SEED_OFFSET`.
    Returns X (uint8 (n, 784)) and labels for "digits" and "negatives", plus the negatives' kinds.
    """
    test, test_labels = _mnist_digits("test", mnist_dir)
    odd = np.arange(1, len(test), 2)
    vseed = seed + VAL_SEED_OFFSET
    with Bar(progress) as bar:
        Xd, yd, kd = render_positives(
            count,
            vseed,
            digits=(test[odd], test_labels[odd]),
            style_share=STYLE_SHARE,
            augment=False,
            jobs=jobs,
            progress=bar.task("validation digits", count),
        )
        half = count // 2
        Xs, _, ks = render_negatives(
            half, vseed, kinds=("scribbles",), jobs=jobs, progress=bar.task("validation scribbles", half)
        )
        others = tuple(k for k in NEGATIVE_KINDS if k != "scribbles")
        Xn, _, kn = render_negatives(
            count - half,
            vseed + 1,
            digits=(test[odd], test_labels[odd]),
            kinds=others,
            jobs=jobs,
            progress=bar.task("validation non-digits", count - half),
        )
    return {
        "digits": Xd,
        "labels": yd,
        "digit_kinds": np.array(kd),
        "negatives": np.vstack([Xs, Xn]),
        "negative_kinds": np.array(ks + kn),
    }


def choose_thresholds(
    p_digits: np.ndarray,
    labels: np.ndarray,
    p_negatives: np.ndarray,
    model_outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    detector_share: float = DETECTOR_SHARE,
    model_share: float = MODEL_SHARE,
) -> dict[str, Any]:
    """Pick t_detector and t_model[name] on validation data.

    t_detector: the detector alone flags `detector_share` of the validation digits (model-agnostic).
    t_model[name]: the largest top-probability threshold that flags at most `model_share` of the
    model's correct answers *not already flagged by the detector*. So each model flags at most about
    detector_share + model_share of its correct validation answers. `model_outputs`: name -> (proba on
    the digits, proba on the negatives). Returns {"t_detector", "t_model": {name: t},
    "validation": {name: rates}}.
    """
    p_digits, p_negatives = np.asarray(p_digits), np.asarray(p_negatives)
    td = float(np.quantile(p_digits, 1.0 - detector_share)) if detector_share > 0 else 1.0
    by_detector = p_digits > td
    t_model, rates = {}, {}
    for name, (pd, pn) in model_outputs.items():
        correct = pd.argmax(axis=1) == labels
        budget = math.floor(model_share * correct.sum())
        t_model[name] = _max_threshold(pd.max(axis=1)[correct & ~by_detector], budget)
        flags = by_detector | (pd.max(axis=1) < t_model[name])
        s_flags = (p_negatives > td) | (pn.max(axis=1) < t_model[name])
        rates[name] = flag_rates(flags, correct, s_flags)
    rates["detector_alone"] = {
        "digits_flagged": round(float(np.mean(by_detector)), 4),
        "negatives_flagged": round(float(np.mean(p_negatives > td)), 4),
    }
    return {"t_detector": td, "t_model": t_model, "validation": rates}


def _ready_models(model_dir: Path | None) -> dict[str, Any]:
    """Every model that loads from `model_dir` (or the settings'), bundled CNN included, each alone (no partner)."""
    from digitlab.core.config import get_settings
    from digitlab.models.registry import MODEL_SPECS, ModelRegistry

    registry = ModelRegistry(
        Path(model_dir) if model_dir is not None else get_settings().model_dir
    ).load_all()
    return {name: registry.get(name).with_partner(None) for name in MODEL_SPECS if registry.get(name) is not None}


def _batched(fn: Callable, X: np.ndarray, chunk: int = 1000) -> np.ndarray:
    if len(X) == 0:
        return np.zeros((0, 10))
    return np.vstack([np.asarray(fn(X[i : i + chunk]), np.float64) for i in range(0, len(X), chunk)])


def calibrate(
    detector: UncertaintyDetector,
    val: Mapping[str, np.ndarray],
    models: Mapping[str, Any],
    *,
    detector_share: float = DETECTOR_SHARE,
    model_share: float = MODEL_SHARE,
    real: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Thresholds for `detector` and `models` (name -> LoadedModel) on a `validation_set`.

    With `real` (`training.real_calibration.real_calibration_data`), the thresholds are then re-chosen
    so that the flag catches real mistakes within the budget of correct answers flagged.
    """
    from digitlab.models.registry import MODEL_SPECS

    Xd = val["digits"].astype(np.float32) / 255.0
    Xn = val["negatives"].astype(np.float32) / 255.0
    (p_d, digits_d), p_n = detector.detector_outputs(Xd), detector.not_digit_probabilities(Xn)
    outputs = {
        name: (_batched(m.predict_proba, Xd), _batched(m.predict_proba, Xn)) for name, m in models.items()
    }
    chosen = choose_thresholds(
        p_d, val["labels"], p_n, outputs, detector_share=detector_share, model_share=model_share
    )
    t_model = {name: round(t, 4) for name, t in chosen["t_model"].items()}
    real_rates, t_joint, opinion = None, {}, {}
    if real is not None and models:
        from digitlab.training.real_calibration import real_thresholds

        on_real = real_thresholds(
            detector, models, real, (p_d, val["labels"], {n: o[0] for n, o in outputs.items()}, Xd),
            chosen["t_detector"], p_n, drawn_digits=digits_d,
        )
        chosen["t_detector"], t_model, real_rates = on_real["t_detector"], on_real["t_model"], on_real["real"]
        t_joint, opinion = on_real["t_joint"], on_real["opinion"]
    # a model the thresholds were not fitted to gets the most cautious calibrated value (or 0.3)
    default = round(min(t_model.values()), 4) if t_model else 0.3
    full = {name: t_model.get(name, default) for name in MODEL_SPECS}
    full[DEFAULT_T_MODEL_KEY] = default
    # `opinion`: the models whose second opinion is the CNN's (the others': the detector's)
    thresholds = {"t_detector": round(chosen["t_detector"], 6), "t_model": full, **({"opinion": opinion} if opinion else {})}
    if t_joint:  # the second opinion; a model the thresholds were not fitted to gets the mildest one
        thresholds["t_joint"] = {
            **{name: t_joint.get(name, min(t_joint.values())) for name in MODEL_SPECS},
            DEFAULT_T_MODEL_KEY: min(t_joint.values()),
        }
    return {
        "thresholds": thresholds,
        "calibration": {
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "detector_share": detector_share,
            "model_share": model_share,
            "calibrated_models": {name: m.manifest.get("sha256") for name, m in models.items()},
            "uncalibrated_models": [n for n in MODEL_SPECS if n not in t_model],
            "validation_digits": len(Xd),
            "validation_negatives": len(Xn),
            "validation": chosen["validation"],
            "real_handwriting": real_rates,
        },
    }


def train_detector(
    out_dir: Path,
    *,
    seed: int = 0,
    count: int = 24000,
    progress: bool = True,
    jobs: int | None = None,
    model_dir: Path | None = None,
    mnist_dir: Path | None = None,
    val_count: int = VAL_COUNT,
    handwriting_dir: Path | None = None,
) -> dict:
    """Train the not-a-digit detector, choose its thresholds, write `detector.npz` + `detector.json`.

    `count` training drawings (half digits from MNIST *training* images and style templates, half
    non-digits), rendered the API's way, plus `real_positives` of `handwriting_dir` among the digits
    when given; an MLP on `detector_features`; thresholds on
    `validation_set(seed)` against every model that loads from `model_dir` (default: the settings'
    model dir; the bundled CNN included). Returns the manifest.
    """
    from sklearn.neural_network import MLPClassifier

    from digitlab.models.artifacts import library_versions, save_artifact

    started = time.perf_counter()
    jobs = max(1, jobs or min(2, os.cpu_count() or 1))
    out_dir = Path(out_dir)
    train, train_labels = _mnist_digits("train", mnist_dir)
    n_pos = count // 2
    with Bar(progress) as bar:
        Xp, yp, kp = render_positives(
            n_pos, seed, digits=(train, train_labels), jobs=jobs, progress=bar.task("training digits", n_pos)
        )
        Xn, yn, kn = render_negatives(
            count - n_pos,
            seed,
            digits=(train, train_labels),
            jobs=jobs,
            progress=bar.task("training non-digits", count - n_pos),
        )
    real = real_positives(handwriting_dir, seed, jobs=jobs, cache_dir=_cache_dir())
    if real is not None:
        Xp, yp, kp = np.vstack([Xp, real[0]]), np.concatenate([yp, real[1]]), kp + real[2]
    render_seconds = time.perf_counter() - started
    log(
        f"rendered {len(Xp)} digits ({len(real[1]) if real is not None else 0} of them real handwriting) "
        f"and {len(Xn)} non-digits in {render_seconds:.0f} s; features and fitting"
    )
    F = detector_features(np.vstack([Xp, Xn]).astype(np.float32) / 255.0)
    y = np.concatenate([yp, yn])
    mean = F.mean(axis=0)
    scale = F.std(axis=0)
    scale[scale < 1e-6] = 1.0
    Z = standardise(F, mean, scale)
    clf = MLPClassifier(
        (HIDDEN,),
        alpha=ALPHA,
        batch_size=256,
        learning_rate_init=1e-3,
        max_iter=80,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=6,
        random_state=seed,
    )
    t = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: early stopping decides
        clf.fit(Z, y)
    fit_seconds = time.perf_counter() - t
    log(
        f"MLP fitted in {fit_seconds:.0f} s ({clf.n_iter_} epochs, "
        f"held-out accuracy {clf.best_validation_score_:.4f})"
    )
    weights = list(zip(clf.coefs_, clf.intercepts_))
    payload = pack(mean, scale, weights)
    mean_q, scale_q, weights_q = unpack(payload)  # thresholds are chosen on exactly what is shipped
    detector = UncertaintyDetector({}, mean_q, scale_q, weights_q, NOT_DIGIT)

    log("validation drawings (MNIST test digits with odd index, other seeds) and models for the thresholds")
    val = validation_set(seed, val_count, mnist_dir=mnist_dir, jobs=jobs, progress=progress)
    models = _ready_models(model_dir)
    if not models:
        log("no trained model found: only the detector's threshold is calibrated")
    cal = calibrate(detector, val, models, real=_real(handwriting_dir, jobs))
    kinds_p: dict[str, int] = {}
    for k in kp:
        key = k if k in ("traced", "real-usps", "real-semeion") else "styles"
        kinds_p[key] = kinds_p.get(key, 0) + 1
    kinds_n: dict[str, int] = {}
    for k in kn:
        kinds_n[k] = kinds_n.get(k, 0) + 1
    manifest = {
        "display_name": "Not-a-digit detector",
        "version": "1.0.0",
        "kind": "uncertainty-detector",
        "not_digit_index": NOT_DIGIT,
        "features": {
            "n": N_FEATURES,
            "blocks": [
                "deskewed pixels 784",
                "gradient histograms 4x4 cells 392",
                "raw gradient histograms 7x7 cells 128",
                f"shape statistics {N_STATS}",
            ],
            "clip": CLIP,
        },
        "network": {
            "hidden": [HIDDEN],
            "activation": "relu",
            "classes": "0-9 digits, 10 = not a digit",
            "alpha": ALPHA,
            "epochs": int(clf.n_iter_),
            "held_out_accuracy": round(float(clf.best_validation_score_), 4),
        },
        **cal,
        "training_seconds": round(time.perf_counter() - started, 1),
        "train_samples": len(y),
        "training_data": {
            "seed": seed,
            "count": count,
            "digits": kinds_p,
            "non_digits": dict(sorted(kinds_n.items())),
            "digit_source": "MNIST training set (traced) + STYLES + real handwriting 'fit' parts "
            "(USPS train, Semeion groups 0-2); never the MNIST test set, the real calibration part "
            "or the held-out benchmark",
        },
        "library_versions": library_versions(),
        "params": {"seed": seed, "count": count, "val_count": val_count},
    }
    manifest = save_artifact(out_dir, DETECTOR_NAME, payload, "npz", manifest)
    log(
        f"detector: {manifest['size_bytes'] / 1e6:.2f} MB in {out_dir}; "
        f"t_detector {manifest['thresholds']['t_detector']:.4f}, "
        f"t_model {manifest['thresholds']['t_model']}; {manifest['training_seconds']:.0f} s in all"
    )
    return manifest


def recalibrate(
    out_dir: Path,
    *,
    model_dir: Path | None = None,
    seed: int | None = None,
    val_count: int | None = None,
    mnist_dir: Path | None = None,
    jobs: int | None = None,
    progress: bool = True,
    handwriting_dir: Path | None = None,
) -> dict:
    """Choose the thresholds again for the models there are now (e.g. after a model was retrained).

    Takes the detector that `load_detector(out_dir)` finds (the one in `out_dir`, else the bundled
    one; hash-checked), keeps its weights, calibrates it against every model that loads from
    `model_dir` (default: the settings' model dir; the bundled CNN included) on its own validation
    set, and writes `detector.npz` + `detector.json` into `out_dir`. The package's bundled files are
    only rewritten when `out_dir` is the bundled folder itself.
    """
    from digitlab.models.artifacts import read_verified, save_artifact

    out_dir = Path(out_dir)
    source = detector_dir(out_dir)
    manifest, payload = read_verified(source, DETECTOR_NAME)
    detector = from_payload(source, manifest, payload)
    params = manifest.get("params", {})
    seed = params.get("seed", 0) if seed is None else seed
    val_count = params.get("val_count", VAL_COUNT) if val_count is None else val_count
    jobs = max(1, jobs or min(2, os.cpu_count() or 1))
    val = validation_set(seed, val_count, mnist_dir=mnist_dir, jobs=jobs, progress=progress)
    cal = calibrate(detector, val, _ready_models(model_dir), real=_real(handwriting_dir, jobs))
    keep = {
        k: v
        for k, v in manifest.items()
        if k not in ("thresholds", "calibration", "sha256", "size_bytes", "artifact", "format", "name")
    }
    keep["params"] = {"seed": seed, "count": params.get("count"), "val_count": val_count}
    new = save_artifact(out_dir, DETECTOR_NAME, payload, "npz", {**keep, **cal})
    log(
        f"recalibrated {out_dir / (DETECTOR_NAME + '.json')}: "
        f"t_detector {new['thresholds']['t_detector']:.4f}, "
        f"t_model {new['thresholds']['t_model']}, t_joint {new['thresholds'].get('t_joint')}"
    )
    return new


def _real(handwriting_dir: Path | None, jobs: int | None) -> dict | None:
    """The real-handwriting calibration part (see `training.real_calibration`), if asked for and there."""
    if handwriting_dir is None:
        return None
    from digitlab.training.real_calibration import real_calibration_data

    return real_calibration_data(handwriting_dir, jobs=jobs, cache_dir=_cache_dir())


def _cache_dir() -> Path:
    from digitlab.core.config import get_settings

    return get_settings().data_dir / "cache"


def train_detector_command(
    *,
    out_dir: Path | None = None,
    count: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    calibrate_only: bool = False,
) -> int:
    """`digitlab train detector [--out DIR] [--count N] [--calibrate-only]`."""
    from digitlab.core.config import get_settings

    settings = get_settings()
    out = Path(out_dir) if out_dir is not None else settings.model_dir
    if calibrate_only:
        recalibrate(
            out, model_dir=settings.model_dir, mnist_dir=settings.mnist_dir, jobs=jobs,
            handwriting_dir=settings.handwriting_path,
        )
        return 0
    train_detector(
        out,
        seed=seed,
        count=count or 24000,
        jobs=jobs,
        model_dir=settings.model_dir,
        mnist_dir=settings.mnist_dir,
        handwriting_dir=settings.handwriting_path,
    )
    return 0
