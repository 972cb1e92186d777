"""The models digitlab knows, and the registry that loads the trained ones once per process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.models.artifacts import ArtifactError, read_verified

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).with_name("bundled")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    display_name: str
    description: str
    version: str
    build: Callable[[], Any] | None = None  # a fresh, unfitted scikit-learn estimator
    bundled: bool = False  # shipped inside the package (the CNN)


def _classical(name: str):
    def build():
        from digitlab.models import classical

        return classical.build(name)

    return build


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "cnn",
            "CNN (convolutional network)",
            "A small convolutional network trained with PyTorch on augmented MNIST, served with onnxruntime.",
            "1.0.0",
            bundled=True,
        ),
        ModelSpec(
            "svm",
            "SVM (RBF kernel)",
            "Support vector machine with a Gaussian kernel on deskewed gradient-orientation features.",
            "1.0.0",
            _classical("svm"),
        ),
        ModelSpec(
            "svm_pca",
            "SVM + PCA",
            "PCA down to a compact code of the deskewed pixels and gradients, then an RBF support vector machine.",
            "1.0.0",
            _classical("svm_pca"),
        ),
        ModelSpec(
            "extra_trees",
            "Extra Trees",
            "Extremely randomized trees on deskewed pixels and gradient features, walked as flat numpy arrays.",
            "1.0.0",
            _classical("extra_trees"),
        ),
        ModelSpec(
            "random_forest",
            "Random Forest",
            "A random forest on deskewed pixels and gradient features, walked as flat numpy arrays.",
            "1.0.0",
            _classical("random_forest"),
        ),
    ]
}
CLASSICAL_MODELS = [name for name, spec in MODEL_SPECS.items() if spec.build is not None]
# When a request names no model: the first ready one in this order (strongest first).
PREFERENCE = ["cnn", "svm", "svm_pca", "extra_trees", "random_forest"]


@dataclass
class LoadedModel:
    """A verified, loaded model: `predict_proba((n, 784) float32 in [0, 1]) -> (n, 10)`."""

    spec: ModelSpec
    manifest: dict
    estimator: Any = field(repr=False)

    name = property(lambda self: self.spec.name)
    display_name = property(lambda self: self.spec.display_name)
    description = property(lambda self: self.spec.description)
    version = property(lambda self: self.manifest.get("version", self.spec.version))

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).reshape(-1, 784)
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        return proba / proba.sum(axis=1, keepdims=True)


def model_dirs_for(name: str, model_dir: Path) -> list[Path]:
    """Trained artefacts in `model_dir` win over the one bundled with the package."""
    dirs = [Path(model_dir)]
    if MODEL_SPECS[name].bundled:
        dirs.append(BUNDLED_DIR)
    return dirs


def load_model(name: str, model_dir: Path) -> LoadedModel:
    """Load one model after checking its SHA-256; `ArtifactError` says which file and what to do."""
    if name not in MODEL_SPECS:
        raise ArtifactError(f"unknown model {name!r}: choose one of {', '.join(MODEL_SPECS)}.", code="unknown_model")
    spec = MODEL_SPECS[name]
    error: ArtifactError | None = None
    for directory in model_dirs_for(name, model_dir):
        if not (directory / f"{name}.json").exists():
            continue
        try:
            manifest, payload = read_verified(directory, name)
        except ArtifactError as exc:
            error = error or exc
            continue
        if manifest["format"] == "onnx":
            from digitlab.models.onnx import OnnxClassifier

            estimator = OnnxClassifier(payload)
            estimator._session()  # fail now, at start-up, not on the first request
        else:
            import io

            import joblib

            estimator = joblib.load(io.BytesIO(payload))
        return LoadedModel(spec, manifest, estimator)
    raise error or ArtifactError(
        f"{Path(model_dir) / (name + '.json')} is missing: run `digitlab train {name}` to build the model."
    )


def is_training(name: str, model_dir: Path) -> bool:
    return (Path(model_dir) / f"{name}.training").exists()


class ModelRegistry:
    """Every model loaded once (at API start-up); re-scanned on demand to pick up finished training."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def load_all(self) -> ModelRegistry:
        for name in MODEL_SPECS:
            self.refresh(name)
        return self

    def refresh(self, name: str) -> None:
        """(Re)load `name` if its manifest changed; keep the loaded one when nothing new is there."""
        current = self._models.get(name)
        try:
            manifest_path = next(
                (d / f"{name}.json" for d in model_dirs_for(name, self.model_dir) if (d / f"{name}.json").exists()),
                None,
            )
            if manifest_path is None:
                return
            if current is not None and current.manifest.get("_path") == str(manifest_path) and (
                current.manifest.get("_mtime") == manifest_path.stat().st_mtime
            ):
                return
            model = load_model(name, self.model_dir)
            model.manifest["_path"] = str(manifest_path)
            model.manifest["_mtime"] = manifest_path.stat().st_mtime
            with self._lock:
                self._models[name] = model
                self._errors.pop(name, None)
        except ArtifactError as exc:
            log.error("model %s not loaded: %s", name, exc)
            self._errors[name] = str(exc)

    def refresh_training(self) -> None:
        """Pick up models whose training finished since start-up (cheap: a few stat calls)."""
        for name in MODEL_SPECS:
            if name not in self._models or is_training(name, self.model_dir):
                self.refresh(name)

    def status(self) -> dict[str, str]:
        out = {}
        for name in MODEL_SPECS:
            if name in self._models:
                out[name] = "ready"
            elif is_training(name, self.model_dir):
                out[name] = "training"
            else:
                out[name] = "missing"
        return out

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def ready_names(self) -> list[str]:
        return [name for name in PREFERENCE if name in self._models]

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def default_name(self, preferred: str | None = None) -> str | None:
        if preferred and preferred in self._models:
            return preferred
        ready = self.ready_names()
        return ready[0] if ready else None
