"""`digitlab train` and `digitlab evaluate`: build the models from MNIST, and score saved ones.

Features are stateless, so they are computed once per recipe and shared by every model that uses
them; the models then train in parallel worker processes (forked, so the arrays are not copied).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from digitlab.core.config import get_settings
from digitlab.errors import DigitlabError
from digitlab.features import deskew, gradient_histograms
from digitlab.models import classical
from digitlab.models.artifacts import accuracy_and_confusion, dump_joblib, library_versions, save_artifact
from digitlab.models.registry import CLASSICAL_MODELS, MODEL_SPECS, load_model

CALIBRATION_SIZE = 5000  # held out of the training set to fit the SVMs' probability temperature
TREES = {"extra_trees", "random_forest"}
SLOWEST_FIRST = ["svm", "random_forest", "svm_pca", "extra_trees"]

_SHARED: dict = {}  # arrays inherited by forked workers


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fit_one(name: str, seed: int, n_jobs: int) -> tuple[str, bytes, dict]:
    """Fit the final step of one model on precomputed features; return artefact bytes + manifest."""
    from sklearn.pipeline import Pipeline

    from digitlab.models.rbf_svc import FastRBFSVC

    recipe = _recipe_key(name)
    F_fit, y_fit = _SHARED["fit"][recipe], _SHARED["y_fit"]
    F_cal, y_cal = _SHARED["cal"][recipe], _SHARED["y_cal"]
    F_test, y_test = _SHARED["test"][recipe], _SHARED["y_test"]
    started = time.perf_counter()
    estimator = classical.head(name, seed=seed, n_jobs=n_jobs)
    if name in TREES:
        estimator.fit(np.vstack([F_fit, F_cal]), np.concatenate([y_fit, y_cal]))
        from digitlab.models.forest import FlatForest

        final = FlatForest.from_sklearn(estimator)
        params = {"n_estimators": estimator.n_estimators, "nodes": len(final.feature), "depth": final.depth}
    else:
        estimator.fit(F_fit, y_fit)
        svc = estimator[-1] if isinstance(estimator, Pipeline) else estimator
        fast = FastRBFSVC(svc).fit()
        if isinstance(estimator, Pipeline):  # PCA first
            fast.calibrate(estimator[:-1].transform(F_cal), y_cal)
            final = Pipeline([*estimator.steps[:-1], ("svc", fast)])
        else:
            final = fast.calibrate(F_cal, y_cal)
        params = {
            "C": svc.C, "gamma": fast.gamma_, "support_vectors": int(svc.n_support_.sum()),
            "calibration": {"vote_slope": fast.vote_slope_, "temperature": fast.temperature_},
        }
    seconds = time.perf_counter() - started
    proba = final.predict_proba(F_test)
    accuracy, confusion = accuracy_and_confusion(y_test, proba.argmax(axis=1))
    pipeline = Pipeline([("features", classical.features(name)), ("classifier", final)])
    spec = MODEL_SPECS[name]
    manifest = {
        "display_name": spec.display_name,
        "version": spec.version,
        "training_seconds": round(seconds + _SHARED["feature_seconds"], 1),
        "train_samples": int(len(y_fit) + len(y_cal)),
        "library_versions": library_versions(),
        "metrics": {
            "mnist_test_accuracy": round(accuracy, 5),
            "mnist_test_log_loss": round(float(-np.mean(np.log(np.clip(proba[np.arange(len(y_test)), y_test], 1e-12, 1)))), 5),
        },
        "confusion_matrix": confusion,
        "params": {"features": classical.FEATURES[name], "seed": seed, **params},
    }
    return name, dump_joblib(pipeline), manifest


def _recipe_key(name: str) -> str:
    return json.dumps(classical.FEATURES[name], sort_keys=True)


def train_models(
    names: list[str],
    model_dir: Path,
    *,
    limit: int | None = None,
    jobs: int | None = None,
    seed: int = 0,
    mnist_dir: Path | None = None,
) -> list[dict]:
    """Train `names` on MNIST's training set (first `limit` images), save artefacts, return manifests."""
    from digitlab.data import load_mnist

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    jobs = max(1, jobs or os.cpu_count() or 1)
    markers = [model_dir / f"{name}.training" for name in names]
    for marker in markers:
        marker.touch()
    try:
        X, y = load_mnist("train", directory=mnist_dir, limit=limit)
        X_test, y_test = load_mnist("test", directory=mnist_dir)
        X = X.reshape(len(X), 784).astype(np.float32) / 255.0
        X_test = X_test.reshape(len(X_test), 784).astype(np.float32) / 255.0
        order = np.random.default_rng(seed).permutation(len(X))
        n_cal = min(CALIBRATION_SIZE, len(X) // 10)
        cal, fit = order[:n_cal], order[n_cal:]
        started = time.perf_counter()
        recipes = {_recipe_key(name): classical.features(name) for name in names}
        _SHARED.update(fit={}, cal={}, test={}, y_fit=y[fit], y_cal=y[cal], y_test=y_test.astype(int))
        _log(f"features for {len(X)} + {len(X_test)} images (deskew, gradient histograms)")
        straight, straight_test = deskew(X), deskew(X_test)
        histograms, histograms_test = gradient_histograms(straight), gradient_histograms(straight_test)
        for key, transformer in recipes.items():
            F = transformer.from_deskewed(straight, histograms)
            F_test = transformer.from_deskewed(straight_test, histograms_test)
            _SHARED["fit"][key], _SHARED["cal"][key], _SHARED["test"][key] = F[fit], F[cal], F_test
        _SHARED["feature_seconds"] = time.perf_counter() - started
        queue = sorted(names, key=SLOWEST_FIRST.index)
        manifests = []
        workers = min(jobs, len(queue))
        tree_jobs = max(1, jobs // workers)
        _log(f"training {', '.join(queue)} in {workers} process(es) on {len(fit) + n_cal} images")
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_fit_one, name, seed, tree_jobs): name for name in queue}
            for future in as_completed(futures):
                name, payload, manifest = future.result()
                manifest = save_artifact(model_dir, name, payload, "joblib", manifest)
                (model_dir / f"{name}.training").unlink(missing_ok=True)
                manifests.append(manifest)
                _log(
                    f"{name}: test accuracy {manifest['metrics']['mnist_test_accuracy']:.2%}, "
                    f"{manifest['training_seconds']:.0f} s, {manifest['size_bytes'] / 1e6:.1f} MB "
                    f"({len(manifests)}/{len(queue)} done)"
                )
        return manifests
    finally:
        _SHARED.clear()
        for marker in markers:
            marker.unlink(missing_ok=True)


def train_command(
    names: list[str], *, limit: int | None = None, jobs: int | None = None, calibrate_only: bool = False
) -> int:
    """`digitlab train [MODEL ...]`: classical models by default; `cnn` and `detector` on request.

    The detector goes last: its thresholds are calibrated against the models just trained.
    """
    settings = get_settings()
    requested = list(names) or list(CLASSICAL_MODELS)
    unknown = [n for n in requested if n not in MODEL_SPECS and n != "detector"]
    if unknown:
        raise DigitlabError(
            f"unknown model(s) {', '.join(unknown)}: choose from {', '.join([*MODEL_SPECS, 'detector'])}."
        )
    started = time.perf_counter()
    if "cnn" in requested:
        train_cnn_with_drawings(settings, limit=limit, jobs=jobs)
    classical_names = [n for n in requested if n in CLASSICAL_MODELS]
    if classical_names:
        train_models(classical_names, settings.model_dir, limit=limit, jobs=jobs, mnist_dir=settings.mnist_dir)
    if "detector" in requested:
        from digitlab.uncertainty import train_detector_command

        train_detector_command(jobs=jobs, calibrate_only=calibrate_only)
    _log(f"done in {time.perf_counter() - started:.0f} s; artefacts in {settings.model_dir}")
    return 0


#: Re-drawn MNIST training digits (canvas-like pens and rare styles, see `augment.py`) added to the
#: CNN's training set so it reads canvas drawings as well as scans.
CNN_DRAWN_SAMPLES = 8_000


def train_cnn_with_drawings(settings, *, limit: int | None = None, jobs: int | None = None) -> dict:
    """Train the CNN (needs the `cnn` extra: torch) on MNIST plus re-drawn training digits."""
    try:
        from digitlab.models.cnn import train_cnn
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise DigitlabError(f"training the CNN needs PyTorch ({exc}): pip install -e '.[cnn]'.") from None
    from digitlab.augment import drawn_training_set

    count = CNN_DRAWN_SAMPLES if limit is None else min(CNN_DRAWN_SAMPLES, max(limit // 3, 100))
    marker = Path(settings.model_dir) / "cnn.training"  # the API and UI show "training" meanwhile
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        _log(f"cnn: rendering {count} training digits as canvas drawings")
        extra = drawn_training_set(
            count, seed=0, mnist_dir=settings.mnist_dir, jobs=jobs, cache_dir=settings.data_dir / "cache"
        )
        return train_cnn(settings.model_dir, limit=limit, mnist_dir=settings.mnist_dir, extra_data=extra)
    finally:
        marker.unlink(missing_ok=True)


def evaluate_models(names: list[str], model_dir: Path, *, mnist_dir: Path | None = None) -> list[dict]:
    """Load each saved model (hash-checked) and score it on the official 10k test set."""
    from digitlab.data import load_mnist

    X_test, y_test = load_mnist("test", directory=mnist_dir)
    X_test = X_test.reshape(len(X_test), 784).astype(np.float32) / 255.0
    rows = []
    for name in names:
        model = load_model(name, model_dir)
        started = time.perf_counter()
        proba = model.predict_proba(X_test)
        seconds = time.perf_counter() - started
        accuracy, confusion = accuracy_and_confusion(y_test, proba.argmax(axis=1))
        rows.append(
            {
                "model": name,
                "version": model.version,
                "mnist_test_accuracy": round(accuracy, 5),
                "errors": int(len(y_test) - round(accuracy * len(y_test))),
                "ms_per_image_batch": round(1000 * seconds / len(y_test), 4),
                "confusion_matrix": confusion,
            }
        )
    return rows


def evaluate_command(names: list[str], *, as_json: bool = False) -> int:
    settings = get_settings()
    if not names:
        names = [n for n in MODEL_SPECS if _available(n, settings.model_dir)]
        if not names:
            raise DigitlabError(f"no trained models in {settings.model_dir}: run `digitlab train` first.")
    rows = evaluate_models(names, settings.model_dir, mnist_dir=settings.mnist_dir)
    if as_json:
        print(json.dumps({row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="MNIST test set (10,000 images)")
    for column in ("model", "version", "accuracy", "errors", "ms / image (batch)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            row["model"], row["version"], f"{row['mnist_test_accuracy']:.2%}", str(row["errors"]),
            f"{row['ms_per_image_batch']:.3f}",
        )
    Console().print(table)
    return 0


def _available(name: str, model_dir: Path) -> bool:
    from digitlab.models.registry import model_dirs_for

    return any((d / f"{name}.json").exists() for d in model_dirs_for(name, model_dir))
