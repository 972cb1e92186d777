"""The models digitlab knows, and the registry that loads the trained ones once per process."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
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
    bundled: bool = False  # shipped inside the package (the CNN); the others are built by `digitlab train`


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "cnn",
            "CNN (convolutional network)",
            "Small convolutional networks (three, averaged) trained with PyTorch on MNIST, style drawings and "
            "real handwriting, served with onnxruntime; when they are not sure, the SVM is asked too (once fully trained).",
            "1.0.0",
            bundled=True,
        ),
        ModelSpec(
            "svm",
            "SVM (RBF kernel)",
            "Support vector machine with a Gaussian kernel on deskewed gradient-orientation features.",
            "1.0.0",
        ),
        ModelSpec(
            "svm_pca",
            "SVM + PCA",
            "PCA down to a compact code of the deskewed pixels and gradients, then an RBF support vector machine.",
            "1.0.0",
        ),
        ModelSpec(
            "extra_trees",
            "Extra Trees",
            "Extremely randomized trees on deskewed pixels and gradient features, served as flat numpy arrays.",
            "1.0.0",
        ),
        ModelSpec(
            "random_forest",
            "Random Forest",
            "A random forest on deskewed pixels and gradient features, served as flat numpy arrays.",
            "1.0.0",
        ),
    ]
}
CLASSICAL_MODELS = [name for name, spec in MODEL_SPECS.items() if not spec.bundled]
# When a request names no model: the first ready one in this order (strongest first).
PREFERENCE = ["cnn", "svm", "svm_pca", "extra_trees", "random_forest"]
#: A model that asks another when it is not sure: the CNN asks the SVM (other features, other mistakes) for
#: drawings where its top probability is under SECOND_OPINION_BELOW (2-7 % of real handwriting), and answers
#: with the normalised geometric mean of both (SECOND_OPINION_WEIGHT is the SVM's share). Chosen on the
#: real calibration parts (docs/real.md, "The CNN asks the SVM"); a threshold of 1 (always both) read them no
#: better, so a sure drawing costs nothing more.
SECOND_OPINION = {"cnn": "svm"}
SECOND_OPINION_BELOW = 0.95
SECOND_OPINION_WEIGHT = 0.5
#: A partner is asked only if it learned what the rule was chosen with: all of MNIST (at least this many
#: training images) and the real handwriting. A weaker one made the CNN worse on the calibration parts: an svm
#: without real handwriting (the Docker image's) Semeion 96.65 -> 95.94 %, a quick one (`--limit 3000`) USPS
#: 99.25 -> 99.05 % and Semeion 96.65 -> 95.84 % (the full svm: 99.45 and 98.17 %)
PARTNER_MIN_SAMPLES = 60_000  # MNIST's training set (`data.SPLIT_SIZES`; data imports the settings, which import this)


def can_partner(model: LoadedModel) -> bool:
    """May `model` give a second opinion (`PARTNER_MIN_SAMPLES`)? Read from its manifest."""
    manifest = model.manifest
    real = (manifest.get("extra_training_data") or {}).get("real_handwriting") or 0
    return int(manifest.get("train_samples") or 0) >= PARTNER_MIN_SAMPLES and int(real) > 0


def asking(model: LoadedModel, partner: LoadedModel | None) -> LoadedModel:
    """`model` asking `partner` when that one `can_partner`, else answering alone."""
    return model.with_partner(partner if partner is not None and can_partner(partner) else None)


@dataclass
class LoadedModel:
    """A verified, loaded model: `predict_proba((n, 784) float32 in [0, 1]) -> (n, 10)`."""

    spec: ModelSpec
    manifest: dict
    estimator: Any = field(repr=False)
    #: the model asked when this one is not sure (`SECOND_OPINION`); None: it answers alone
    partner: LoadedModel | None = field(default=None, repr=False)

    name = property(lambda self: self.spec.name)
    display_name = property(lambda self: self.spec.display_name)
    description = property(lambda self: self.spec.description)
    version = property(lambda self: self.manifest.get("version", self.spec.version))

    @property
    def answer_version(self) -> str:
        """What stored answers name: this model's version, and its partner's when it has one ("2+svm:1.0.0")."""
        if self.partner is None:
            return str(self.version)
        return f"{self.version}+{self.partner.name}:{self.partner.version}"

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def with_partner(self, partner: LoadedModel | None) -> LoadedModel:
        """This model asking `partner` when not sure (itself when that is already so)."""
        return self if partner is self.partner else dataclasses.replace(self, partner=partner)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.predict_opinions(X)[0]

    def predict_with_opinion(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, own opinion or None): for a model that is several networks (the CNN) the
        smallest of their own probabilities per digit, from the same run; the "not sure" flag's second
        opinion for it (`detector.runtime`). None for every other model."""
        return self.predict_opinions(X)[:2]

    def predict_opinions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(probabilities, own opinion or None, alone or None). `alone`: when a partner was asked for some
        rows (`SECOND_OPINION`), this model's probabilities before it was; the "not sure" flag is the
        model's own flag on them or on the answer (docs/uncertainty.md, "The CNN asks the SVM")."""
        X = np.asarray(X, dtype=np.float32).reshape(-1, 784)
        members = getattr(self.estimator, "predict_proba_members", None)
        own = None
        if members is None:
            proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
            proba = proba / proba.sum(axis=1, keepdims=True)
        else:
            proba, networks = members(X)
            own = None if networks is None else networks.min(axis=1)
        mixed = self._second_opinion(X, proba)
        return mixed, own, (proba if mixed is not proba else None)

    def _second_opinion(self, X: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """`proba` with the rows this model is not sure of mixed with its partner's (`SECOND_OPINION`);
        `proba` itself when no row was. A partner that fails leaves the model's own answer (logged): asking
        it must never fail a prediction."""
        if self.partner is None:
            return proba
        rows = np.flatnonzero(proba.max(axis=1) < SECOND_OPINION_BELOW)
        if not len(rows):
            return proba
        try:
            other = self.partner.with_partner(None).predict_proba(X[rows])
        except Exception as exc:  # noqa: BLE001
            log.error("%s could not ask %s (%s: %s): answering alone", self.name, self.partner.name,
                      type(exc).__name__, exc)  # fmt: skip
            return proba
        from scipy.special import softmax

        w = SECOND_OPINION_WEIGHT
        mixed = (1.0 - w) * np.log(proba[rows] + 1e-6) + w * np.log(other + 1e-6)
        out = proba.copy()
        out[rows] = softmax(mixed, axis=1)
        return out


def predict_with_opinion(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, the model's own second opinion or None) of `model` -- anything with
    `predict_with_opinion` (a `LoadedModel`), or `predict_proba`, or a `LoadedModel`'s bound
    `predict_proba` -- so callers that hold plain predict functions get the CNN's networks' opinion too."""
    owner = getattr(model, "__self__", model)  # a bound method: its model
    if hasattr(owner, "predict_with_opinion"):
        return owner.predict_with_opinion(X)
    return (model.predict_proba(X) if hasattr(model, "predict_proba") else model(X)), None


def predict_opinions(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`predict_with_opinion`, and the model's answer before it asked its partner (None when it asked none:
    `LoadedModel.predict_opinions`)."""
    owner = getattr(model, "__self__", model)
    if hasattr(owner, "predict_opinions"):
        return owner.predict_opinions(X)
    return (*predict_with_opinion(model, X), None)


def model_dirs_for(name: str, model_dir: Path) -> list[Path]:
    """Trained artefacts in `model_dir` win over the one bundled with the package."""
    dirs = [Path(model_dir)]
    if MODEL_SPECS[name].bundled:
        dirs.append(BUNDLED_DIR)
    return dirs


def component_dir(name: str, model_dir: Path | None) -> Path:
    """Where a part beside the models (segment verifier, line reader) loads from: `model_dir` when it holds
    `<name>.json` (rebuilt there by `digitlab train <name>`), else the bundled folder."""
    if model_dir is not None and (Path(model_dir) / f"{name}.json").exists():
        return Path(model_dir)
    return BUNDLED_DIR


def manifest_path(name: str, model_dir: Path) -> Path | None:
    """The manifest that serves `name`: the trained one in `model_dir`, else the bundled one; None if neither."""
    return next((p for d in model_dirs_for(name, model_dir) if (p := d / f"{name}.json").exists()), None)


def _stat_key(path: Path) -> tuple | None:
    """A file's identity and state (inode, size, modification time), None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def unknown_models(names: Iterable[str], known: Iterable[str] = MODEL_SPECS) -> str | None:
    """One wording for every command given names that are no model (train, evaluate, learn and models each
    had their own): "unknown model 'zzz': choose among cnn, svm, ..."; None when every name is known."""
    known = list(known)
    unknown = [name for name in names if name not in known]
    if not unknown:
        return None
    listed = ", ".join(repr(name[:40]) for name in unknown)
    return f"unknown model{'s' if len(unknown) > 1 else ''} {listed}: choose among {', '.join(known)}"


def load_model(name: str, model_dir: Path) -> LoadedModel:
    """Load one model after checking its SHA-256; `ArtifactError` says which file and what to do."""
    if (unknown := unknown_models([name])) is not None:
        raise ArtifactError(unknown, code="unknown_model")
    error: ArtifactError | None = None
    for directory in model_dirs_for(name, model_dir):
        if not (directory / f"{name}.json").exists():
            continue
        try:
            manifest, payload = read_verified(directory, name)
        except ArtifactError as exc:
            error = error or exc
            continue
        return model_from_payload(name, manifest, payload)
    raise error or ArtifactError(
        f"{Path(model_dir) / (name + '.json')} is missing: run `digitlab train {name}` to build the model."
    )


def model_from_payload(name: str, manifest: dict, payload: bytes) -> LoadedModel:
    """A model from verified artefact bytes (a file's or a learned version's from the database). Bytes that
    pass their checksum but do not load (built with other library versions, or rewritten with a matching
    hash) are an `ArtifactError`: the one model is not served, and the API starts with the others (the
    error stopped every worker, and `digitlab serve` exited 0)."""
    try:
        if manifest["format"] == "onnx":
            from digitlab.models.onnx import OnnxClassifier

            estimator = OnnxClassifier(payload)
            estimator._session()  # fail now, at load, not on the first request
        else:
            import io

            import joblib

            estimator = joblib.load(io.BytesIO(payload))
        if not callable(getattr(estimator, "predict_proba", None)):
            raise TypeError(f"a {type(estimator).__name__}, not a classifier")
    except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, the error names the model and the fix
        raise ArtifactError(f"{name}'s artefact passed its checksum but cannot be loaded ({type(exc).__name__}: "
                            f"{str(exc)[:200]}): rebuild it with `digitlab train {name}` (built by other library "
                            "versions?)") from None  # fmt: skip
    return LoadedModel(MODEL_SPECS[name], manifest, estimator)


def load_served(name: str, model_dir: Path) -> LoadedModel:
    """`load_model`, with the partner it asks when not sure (`SECOND_OPINION`, `asking`) if that one loads: the model
    as the API serves it from `model_dir`'s files (for benchmarks that must measure what users get)."""
    model = load_model(name, model_dir)
    partner_name = SECOND_OPINION.get(name)
    if partner_name is None:
        return model
    try:
        partner = load_model(partner_name, model_dir)
    except ArtifactError:
        return model
    return asking(model, partner)


def is_training(name: str, model_dir: Path) -> bool:
    return (Path(model_dir) / f"{name}.training").exists()


class ModelRegistry:
    """Every model loaded once (at API start-up); re-scanned on demand to pick up finished training."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._learned: set[str] = set()
        self._lock = threading.Lock()

    def load_all(self) -> ModelRegistry:
        for name in MODEL_SPECS:
            self.refresh(name)
        return self

    def refresh(self, name: str) -> None:
        """(Re)load `name` if its manifest or its artefact changed; keep the loaded one when nothing new is there."""
        current = self._models.get(name)
        try:
            path = manifest_path(name, self.model_dir)
            if path is None:
                return
            if current is not None and current.manifest.get("_path") == str(path) and (
                current.manifest.get("_mtime") == path.stat().st_mtime
            ) and self.artefact_key(name) == current.manifest.get("_artefact_key"):
                return
            model = load_model(name, self.model_dir)
            model.manifest["_path"] = str(path)
            model.manifest["_mtime"] = path.stat().st_mtime
            artefact = model.manifest.get("artifact")  # (every manifest names one; the folder's own stat is no key)
            model.manifest["_artefact"] = str(path.parent / Path(artefact).name) if artefact else None
            model.manifest["_artefact_key"] = _stat_key(Path(model.manifest["_artefact"])) if artefact else None
            self.install(model, learned=False)
        except ArtifactError as exc:
            log.error("model %s not loaded: %s", name, exc)
            self._errors[name] = str(exc)

    def artefact_key(self, name: str) -> tuple | None:
        """The served file's artefact as it is on disk now (None: gone, or not served from a file): deleted or
        rewritten under an unchanged manifest it was still "ready" with no error (a probe, session 30)."""
        current = self._models.get(name)
        artefact = current.manifest.get("_artefact") if current is not None else None
        return _stat_key(Path(artefact)) if artefact else None

    def install(self, model: LoadedModel, *, learned: bool) -> None:
        """Serve `model` from now on (an atomic swap: requests in flight finish on the one they hold).
        `learned`: a promoted version from the database, which file changes do not replace."""
        with self._lock:
            self._models[model.name] = model
            self._errors.pop(model.name, None)
            if learned:
                self._learned.add(model.name)
            else:
                self._learned.discard(model.name)
            self._link_partners()

    def forget_learned(self, name: str) -> None:
        """Stop treating `name` as learned (its files are loaded at the next refresh)."""
        with self._lock:
            self._learned.discard(name)
            self._models.pop(name, None)
            self._link_partners()

    def _link_partners(self) -> None:
        """Each model that asks another (`SECOND_OPINION`) holds the one served now, if it `can_partner` (under
        the lock)."""
        for name, partner_name in SECOND_OPINION.items():
            if name in self._models:
                self._models[name] = asking(self._models[name], self._models.get(partner_name))

    def learned_names(self) -> set[str]:
        """Models served from a promoted learned version."""
        return set(self._learned)

    def status(self) -> dict[str, str]:
        out = {}
        for name in MODEL_SPECS:
            if name in self._models:
                out[name] = "ready"
            elif is_training(name, self.model_dir) or self._just_trained(name):
                out[name] = "training"
            else:
                out[name] = "missing"
        return out

    def _just_trained(self, name: str) -> bool:
        """Its files are there and have not failed to load: trained, picked up at the next scan (within
        seconds). Between the training's end and that scan the model said "missing" ("Not trained yet")."""
        return name not in self._errors and (self.model_dir / f"{name}.json").exists()

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
