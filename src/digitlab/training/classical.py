"""Training the four classical models on MNIST (`digitlab train`): feature recipes, estimators, the fit.

Each saved pipeline is `DigitFeatures` (stateless: deskew, gradient histograms) followed by a fitted
estimator.

Features are stateless, so they are computed once per recipe and shared by every model that uses
them; the models then train in parallel worker processes (forked, so the arrays are not copied).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from digitlab.evaluation.heldout import METRIC, HeldOut, heldout_metrics
from digitlab.features import DigitFeatures, deskew, gradient_histograms
from digitlab.models.artifacts import accuracy_and_confusion, dump_joblib, library_versions, save_artifact
from digitlab.models.registry import MODEL_SPECS
from digitlab.processes import fork_pool
from digitlab.training.progress import log

# Feature recipe per model. Distance-based models get balanced blocks; trees take them raw.
FEATURES = {
    "svm": {"pixels": False, "hog": True},
    "svm_pca": {"pixels": True, "hog": True, "pixel_weight": 1.0, "hog_weight": 0.7},
    "extra_trees": {"pixels": True, "hog": True},
    "random_forest": {"pixels": True, "hog": True},
}


def head(name: str, *, seed: int = 0, n_jobs: int = 1):
    """The estimator that follows the feature step (unfitted)."""
    if name == "svm":
        return SVC(C=10.0, gamma="scale", cache_size=1000, random_state=seed)
    if name == "svm_pca":
        return make_pipeline(PCA(n_components=60, random_state=seed), SVC(C=10.0, gamma="scale", cache_size=1000))
    if name == "extra_trees":
        return ExtraTreesClassifier(n_estimators=100, min_samples_leaf=1, n_jobs=n_jobs, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=1, n_jobs=n_jobs, random_state=seed)
    raise KeyError(name)


def features(name: str) -> DigitFeatures:
    return DigitFeatures(**FEATURES[name])


CALIBRATION_SIZE = 5000  # held out of the training set to fit the SVMs' probability temperature
TREES = {"extra_trees", "random_forest"}
SLOWEST_FIRST = ["svm", "random_forest", "svm_pca", "extra_trees"]

_SHARED: dict = {}  # arrays inherited by forked workers


def _fit_one(name: str, seed: int, n_jobs: int) -> tuple[str, bytes, dict]:
    """Fit the final step of one model on precomputed features; return artefact bytes + manifest."""
    from sklearn.pipeline import Pipeline

    from digitlab.models.rbf_svc import FastRBFSVC

    recipe = _recipe_key(name)
    F_fit, y_fit, w_fit = _SHARED["fit"][recipe], _SHARED["y_fit"], _SHARED["w_fit"]
    F_cal, y_cal = _SHARED["cal"][recipe], _SHARED["y_cal"]
    F_test, y_test = _SHARED["test"][recipe], _SHARED["y_test"]
    started = time.perf_counter()
    estimator = head(name, seed=seed, n_jobs=n_jobs)
    if name in TREES:
        weights = np.concatenate([w_fit, np.ones(len(y_cal))])
        estimator.fit(np.vstack([F_fit, F_cal]), np.concatenate([y_fit, y_cal]), sample_weight=weights)
        from digitlab.models.forest import FlatForest

        final = FlatForest.from_sklearn(estimator)
        params = {"n_estimators": estimator.n_estimators, "nodes": len(final.feature), "depth": final.depth}
    else:
        weight_key = "svc__sample_weight" if isinstance(estimator, Pipeline) else "sample_weight"
        estimator.fit(F_fit, y_fit, **{weight_key: w_fit})
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
    real = _SHARED.get("real")  # held-out real handwriting (`evaluation.heldout`), when given
    real_metrics = heldout_metrics(final.predict_proba(_SHARED["real_features"][recipe]), real) if real else {}
    pipeline = Pipeline([("features", features(name)), ("classifier", final)])
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
            **real_metrics,
        },
        "confusion_matrix": confusion,
        "params": {"features": FEATURES[name], "seed": seed, **params},
        "extra_training_data": _SHARED.get("extra"),
    }
    return name, dump_joblib(pipeline), manifest


def _recipe_key(name: str) -> str:
    return json.dumps(FEATURES[name], sort_keys=True)


def train_models(
    names: list[str],
    model_dir: Path,
    *,
    limit: int | None = None,
    jobs: int | None = None,
    seed: int = 0,
    mnist_dir: Path | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    extra_weight: float | np.ndarray = 1.0,
    extra_summary: dict | None = None,
    real_test: HeldOut | None = None,
) -> list[dict]:
    """Train `names` on MNIST's training set (first `limit` images), save artefacts, return manifests.

    `extra`: more training images (uint8 (m, 28, 28), labels) added to the fitting data (never to the
    held-out calibration images): style drawings and real handwriting (`training.coverage`), users'
    drawings (`digitlab learn`). Each weighs `extra_weight` MNIST images (one number, or one per image);
    `extra_summary` goes into the manifest. `real_test`: held-out real handwriting each model is measured on too
    (`evaluation.heldout`: its accuracy goes into the manifest beside MNIST test's).
    """
    from digitlab.data import load_mnist

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    jobs = max(1, jobs or os.cpu_count() or 1)
    markers = [model_dir / f"{name}.training" for name in names]
    try:
        for marker in markers:  # (inside: a signal between the touches and the `try` left them for good)
            marker.touch()
        X, y = load_mnist("train", directory=mnist_dir, limit=limit)
        X_test, y_test = load_mnist("test", directory=mnist_dir)
        X = X.reshape(len(X), 784).astype(np.float32) / 255.0
        X_test = X_test.reshape(len(X_test), 784).astype(np.float32) / 255.0
        order = np.random.default_rng(seed).permutation(len(X))
        n_cal = min(CALIBRATION_SIZE, len(X) // 10)
        cal, fit = order[:n_cal], order[n_cal:]
        weights = np.ones(len(X))
        if extra is not None and len(extra[1]):
            fit = np.concatenate([fit, np.arange(len(X), len(X) + len(extra[1]))])
            X = np.vstack([X, np.asarray(extra[0], np.float32).reshape(-1, 784) / 255.0])
            y = np.concatenate([y, np.asarray(extra[1], y.dtype)])
            weights = np.concatenate([weights, np.broadcast_to(np.asarray(extra_weight, float), len(extra[1]))])
        _SHARED.update(extra=extra_summary, real=real_test, real_features={})
        started = time.perf_counter()
        recipes = {_recipe_key(name): features(name) for name in names}
        _SHARED.update(
            fit={}, cal={}, test={}, y_fit=y[fit], w_fit=weights[fit], y_cal=y[cal], y_test=y_test.astype(int)
        )
        real_rows = f" + {len(real_test.labels)} held-out real" if real_test is not None else ""
        log(f"features for {len(X)} + {len(X_test)}{real_rows} images (deskew, gradient histograms)")
        straight, straight_test = deskew(X), deskew(X_test)
        histograms, histograms_test = gradient_histograms(straight), gradient_histograms(straight_test)
        if real_test is not None:
            straight_real = deskew(real_test.X)
            histograms_real = gradient_histograms(straight_real)
        for key, transformer in recipes.items():
            F = transformer.from_deskewed(straight, histograms)
            F_test = transformer.from_deskewed(straight_test, histograms_test)
            _SHARED["fit"][key], _SHARED["cal"][key], _SHARED["test"][key] = F[fit], F[cal], F_test
            if real_test is not None:
                _SHARED["real_features"][key] = transformer.from_deskewed(straight_real, histograms_real)
        _SHARED["feature_seconds"] = time.perf_counter() - started
        queue = sorted(names, key=SLOWEST_FIRST.index)
        manifests = []
        workers = min(jobs, len(queue))
        tree_jobs = max(1, jobs // workers)
        log(f"training {', '.join(queue)} in {workers} process(es) on {len(fit) + n_cal} images")
        with fork_pool(workers) as pool:
            futures = {pool.submit(_fit_one, name, seed, tree_jobs): name for name in queue}
            for future in as_completed(futures):
                name, payload, manifest = future.result()
                manifest = save_artifact(model_dir, name, payload, "joblib", manifest)
                (model_dir / f"{name}.training").unlink(missing_ok=True)
                manifests.append(manifest)
                real = manifest["metrics"].get(METRIC)
                log(
                    f"{name}: test accuracy {manifest['metrics']['mnist_test_accuracy']:.2%}, "
                    + (f"held-out real handwriting {real:.2%}, " if real is not None else "")
                    + f"{manifest['training_seconds']:.0f} s, {manifest['size_bytes'] / 1e6:.1f} MB "
                    f"({len(manifests)}/{len(queue)} done)"
                )
        return manifests
    finally:
        _SHARED.clear()
        for marker in markers:
            marker.unlink(missing_ok=True)


