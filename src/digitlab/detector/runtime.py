"""The runtime detector: a small ReLU MLP in plain numpy, its weights read from a checksummed `.npz`.

    uncertain = p_not_digit > t_detector  or  max_proba < t_model[model_name]
                or  (max_proba + second opinion's p(the model's answer)) / 2 < t_joint[model_name]
                or  the ink is much flatter than any digit (`too_flat`: a row of digits, a scribble)
                or  the ink fills its box like no digit (`too_solid`: a filled square, a disc, a scribbled-over area)
                or  a dot sits under the strokes, apart from them (`dot_below`: a "?" or a "!")

The last term is a second opinion: a model that is sure of an answer another reader finds unlikely is
often confidently wrong on real handwriting. The other reader is the detector itself (it also reads the
digit, outputs 0-9: free, they come with p_not_digit in `NotDigit`), or for the models the manifest
names in `thresholds.opinion` the CNN (`reference`: run only when the model's own confidence does
not already decide, once per image however many models ask): its probability ("cnn"), the smallest of
its networks' ("cnn_networks": the most doubtful of them) or the mean of that and the detector's reading
("detector_and_cnn_networks": two readers must both doubt), or, for a model that is several networks
(opinion "members": the CNN), the smaller of the detector's reading and the networks' own (they come
with its answer, `LoadedModel.predict_with_opinion`).

See docs/uncertainty.md for how the thresholds are chosen.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
from scipy import ndimage as ndi
from scipy.special import softmax

from digitlab.detector.features import N_FEATURES, detector_features

DETECTOR_NAME = "detector"
MEMBERS = "members"  #: `thresholds.opinion` value: the detector and the model's own networks (`with_own_opinion`)
#: `thresholds.opinion` values asking the CNN: its probability of the answer, the smallest of its networks',
#: the mean of that and the detector's (renormalised) probability of the answer
DETECTOR_AND_NETWORKS = "detector_and_cnn_networks"
CNN_OPINIONS = ("cnn", "cnn_networks", DETECTOR_AND_NETWORKS)
NOT_DIGIT = 10  #: class index of "not a digit" in the training labels (0-9 are digits)



#: a prediction is flagged when the detector's p(not a digit) exceeds t_detector, or the model's top
#: probability is below t_model[name] ("default" for a model the manifest does not know), or the mean of
#: the model's and the detector's probability of the answer is below t_joint[name] (0 or absent: none)
DEFAULT_T_MODEL_KEY = "default"


#: ink this much lower than wide in the 28x28 image is no single digit (a row of three digits or more, a
#: scribble across the canvas, an underline): flagged whatever the models say. 0.07 % of the USPS and 0.03 %
#: of the Semeion digits are that flat (calibration and held-out parts); a 33-digit number sent to /predict
#: was read as a 2 at 0.62-0.80 and not flagged
FLAT_RATIO = 0.4


def too_flat(X: np.ndarray) -> np.ndarray:
    """(n, 784) or (n, 28, 28) images -> (n,) bool: the ink's height is below FLAT_RATIO of its width."""
    ink = np.asarray(X).reshape(-1, 28, 28) > 0.3
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    height = 28 - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    width = 28 - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)
    return rows.any(axis=1) & (height < FLAT_RATIO * width)


#: ink (> 0.5) filling at least this share of its bounding box, in a box at least SOLID_ASPECT as wide as high,
#: is a filled shape, not a digit: a filled square, a disc or a scribbled-over area was read as a sure 0. Share
#: of digits that solid (28x28 as the models see them): MNIST test 0 of 10,000, held-out canvas views of USPS
#: 0 of 10,035 and Semeion 0 of 3,985, drawn digits of the detector's renderer 0 of 3,000. A thick 1 is narrow.
SOLID_FILL = 0.8
SOLID_ASPECT = 0.5


def too_solid(X: np.ndarray) -> np.ndarray:
    """(n, 784) or (n, 28, 28) images -> (n,) bool: the ink fills its bounding box like no digit."""
    ink = np.asarray(X).reshape(-1, 28, 28) > 0.5
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    height, width = rows.sum(axis=1), cols.sum(axis=1)
    area = np.maximum(height * width, 1)
    return (ink.sum(axis=(1, 2)) >= SOLID_FILL * area) & (width >= SOLID_ASPECT * height) & rows.any(axis=1)


#: a separate blob at most DOT_SIZE px high and wide, at least DOT_GAP px below the bottom of the main stroke
#: and under it, is the dot of a "?" or a "!" (read as a sure 7 and a sure 1). Digits with such a dot, as the
#: models see them: calibration USPS 3 of 9,993 and Semeion 0 of 985 (every view), held-out USPS 1 of 10,021
#: and Semeion 1 of 3,958, MNIST test 2 of 10,000 (the sizes chosen before measuring, not tuned)
#: DOT_GAP was 2: a "?" or "!" drawn with its dot 8-20 canvas px below (as most people draw it) leaves one
#: empty row here, and was a sure 7 or 1. At 1: 21 instead of 14 of ~54,000 USPS and Semeion views, MNIST same
DOT_SIZE = 6
DOT_GAP = 1
_EIGHT = np.ones((3, 3), bool)


def dot_below(X: np.ndarray) -> np.ndarray:
    """(n, 784) or (n, 28, 28) images -> (n,) bool: a dot under the strokes, apart from them."""
    ink = np.asarray(X).reshape(-1, 28, 28) > 0.2
    out = np.zeros(len(ink), bool)
    rows = ink.any(axis=2)
    for k in range(len(ink)):
        found = np.flatnonzero(rows[k])
        if len(found) < 2 or found[-1] - found[0] + 1 == len(found):
            continue  # no empty row between the top and the bottom of the ink: no dot apart below
        labels, _count = ndi.label(ink[k], structure=_EIGHT)
        boxes = ndi.find_objects(labels)
        main = boxes[int(np.argmax(np.bincount(labels.ravel())[1:]))]
        for box in boxes:
            high, wide = box[0].stop - box[0].start, box[1].stop - box[1].start
            centre = 0.5 * (box[1].start + box[1].stop)
            if (high <= DOT_SIZE and wide <= DOT_SIZE and box[0].start - main[0].stop >= DOT_GAP
                    and main[1].start - 2 <= centre <= main[1].stop + 2):  # fmt: skip
                out[k] = True
                break
    return out


def odd_shape(X: np.ndarray) -> np.ndarray:
    """`too_flat`, `too_solid` or `dot_below`: no digit has that shape, whatever a model reads in it."""
    return too_flat(X) | too_solid(X) | dot_below(X)


class NotDigit(float):
    """p(not a digit) of one image that also carries the detector's digit probabilities (`digits`, 10),
    so `is_uncertain` can ask for the second opinion without running the network again; `reference`
    keeps the CNN's outputs (`reference_outputs`, (2, 10)) once a model's second opinion needed them."""

    digits: np.ndarray
    reference: np.ndarray | None = None

    def __new__(cls, p_not_digit: float, digits: np.ndarray) -> Self:
        obj = super().__new__(cls, p_not_digit)
        obj.digits = digits
        return obj


def joint_confidence(proba: np.ndarray, digits: np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """Mean of the model's and the detector's probability of the model's answer: (n, 10) x 2 -> (n,).

    The detector's digit outputs are renormalised over the ten digits first (unless `normalise` is
    False: `with_own_opinion` gives a finished second opinion).
    """
    proba = np.asarray(proba, np.float64).reshape(-1, 10)
    digits = np.asarray(digits, np.float64).reshape(-1, 10)
    rows, answers = np.arange(len(proba)), proba.argmax(axis=1)
    second = digits[rows, answers]
    if normalise:
        second = second / np.maximum(digits.sum(axis=1), 1e-12)
    return (proba[rows, answers] + second) / 2


def with_own_opinion(digits: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The second opinion of a model that is several networks (opinion "members"): per digit the smaller
    of the detector's (renormalised) probability and the networks' own smallest one; (n, 10) x 2.

    The networks disagree on many real mistakes that the detector alone finds plausible (held-out real
    handwriting, docs/uncertainty.md)."""
    digits = np.asarray(digits, np.float64).reshape(-1, 10)
    digits = digits / np.maximum(digits.sum(axis=1, keepdims=True), 1e-12)
    return np.minimum(digits, np.asarray(own, np.float64).reshape(-1, 10))


def cnn_reference(proba: np.ndarray, networks: np.ndarray | None) -> np.ndarray:
    """(n, 2, 10): the CNN's probabilities and the smallest of its networks' (its probabilities again for a
    CNN of one network), what `cnn_opinion` reads: `UncertaintyDetector.reference_outputs`' rows."""
    proba = np.asarray(proba, np.float64).reshape(-1, 10)
    return np.stack([proba, proba if networks is None else np.asarray(networks, np.float64).reshape(-1, 10)], axis=1)


def cnn_opinion(kind: str, reference: np.ndarray, digits: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """(second opinion, renormalise?) of the CNN opinion `kind` (one of `CNN_OPINIONS`) from `cnn_reference`
    rows, and the detector's digit outputs `digits` (same leading shape) for `DETECTOR_AND_NETWORKS`."""
    reference = np.asarray(reference, np.float64)
    if kind == DETECTOR_AND_NETWORKS:
        digits = np.asarray(digits, np.float64).reshape(reference[..., 1, :].shape)
        digits = digits / np.maximum(digits.sum(axis=-1, keepdims=True), 1e-12)
        return (digits + reference[..., 1, :]) / 2, False
    return reference[..., CNN_OPINIONS.index(kind), :], kind == "cnn"


@dataclass
class UncertaintyDetector:
    """The not-a-digit detector and the per-model thresholds of the "uncertain" rule.

    Features are standardised with `mean` / `scale` and clipped to +-CLIP; `weights` are the
    [(W, b), ...] of a ReLU MLP whose last softmax column `not_digit_index` is p(not a digit).
    """

    manifest: dict
    mean: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    weights: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)
    not_digit_index: int = NOT_DIGIT
    #: the CNN (a `LoadedModel`, or anything with `predict_proba((n, 784)) -> (n, 10)`) whose probabilities
    #: are the second opinion of the models in `thresholds.opinion`; None: the detector's digit outputs
    reference: Any = field(default=None, repr=False)

    @property
    def t_detector(self) -> float:
        return float(self.manifest["thresholds"]["t_detector"])

    @property
    def t_model(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest["thresholds"]["t_model"].items()}

    def threshold(self, model_name: str) -> float:
        """The top-probability threshold for `model_name` (the manifest's default for unknown names)."""
        t = self.manifest["thresholds"]["t_model"]
        return float(t.get(model_name, t[DEFAULT_T_MODEL_KEY]))

    def joint_threshold(self, model_name: str) -> float:
        """t_joint for `model_name` (the manifest's default for unknown names; 0 = no second opinion)."""
        t = self.manifest["thresholds"].get("t_joint") or {}
        return float(t.get(model_name, t.get(DEFAULT_T_MODEL_KEY, 0.0)))

    def opinion(self, model_name: str) -> str:
        """Who gives `model_name` its second opinion: one of `CNN_OPINIONS` (when the CNN is loaded),
        "members" (the detector and the model's own networks, `with_own_opinion`) or "detector"."""
        named = (self.manifest["thresholds"].get("opinion") or {}).get(model_name, DETECTOR_NAME)
        if named in CNN_OPINIONS:
            return named if self.reference is not None else DETECTOR_NAME
        return named if named == MEMBERS else DETECTOR_NAME

    def _second(self, model_name: str, digits: np.ndarray, own: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """(second opinion (n, 10), whether `joint_confidence` renormalises it) from the detector's digit
        outputs, for the models whose second opinion is not the CNN. A model named "members" without its
        own opinion (an artefact exported without it) falls back to the detector's."""
        if self.opinion(model_name) == MEMBERS and own is not None:
            return with_own_opinion(digits, own), False
        return digits, True

    def asks_cnn(self, model_name: str) -> bool:
        """Whether `model_name`'s second opinion needs the CNN run (`reference_outputs`)."""
        return self.opinion(model_name) in CNN_OPINIONS

    def opinion_can_flag(self, model_name: str, proba: np.ndarray) -> bool:
        """Whether a second opinion could still flag this answer: the joint score is at least half the model's
        own probability, so an answer given at twice `t_joint` or more never is, and the CNN need not run for
        it (a tree sure of a clean digit: ~0.5-1 ms of CPU per request saved)."""
        t_joint = self.joint_threshold(model_name)
        return t_joint > 0 and float(np.max(proba)) < 2 * t_joint

    def reference_outputs(self, X: np.ndarray | None, model_names=()) -> np.ndarray | None:
        """The CNN's outputs for a batch, the second opinion of the models that take it: (n, 2, 10), its
        probabilities and the smallest of its networks' (the same for a CNN of one network); None when
        `model_names` are given and none of them asks the CNN (or X is None)."""
        if X is None or (model_names and not any(self.asks_cnn(n) for n in model_names)):
            return None
        from digitlab.models.registry import predict_with_opinion

        X = np.asarray(X, np.float32).reshape(-1, 784)
        parts = [cnn_reference(*predict_with_opinion(self.reference, X[i : i + 2000])) for i in range(0, len(X), 2000)]
        return np.concatenate(parts) if parts else np.zeros((0, 2, 10))

    def _cnn_second(self, model_name: str, reference: np.ndarray, digits: np.ndarray) -> tuple[np.ndarray, bool]:
        """(second opinion, renormalise?) of a model that asks the CNN, from `reference_outputs` rows and the
        detector's digit outputs."""
        return cnn_opinion(self.opinion(model_name), reference, digits)

    def detector_outputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p(not a digit) (n,), digit probabilities (n, 10)) for (n, 784) or (n, 28, 28) images."""
        h = standardise(detector_features(X), self.mean, self.scale)
        for W, b in self.weights[:-1]:
            h = np.maximum(h @ W + b, 0.0)
        W, b = self.weights[-1]
        out = softmax((h @ W + b).astype(np.float64), axis=1)
        return out[:, self.not_digit_index], np.delete(out, self.not_digit_index, axis=1)

    def not_digit_probabilities(self, X: np.ndarray) -> np.ndarray:
        """p(not a digit) for a batch: (n, 784) or (n, 28, 28) preprocessed images -> (n,) float64."""
        return self.detector_outputs(X)[0]

    def not_digit_probability(self, image28: np.ndarray) -> NotDigit:
        """p(not a digit) of one preprocessed image ((28, 28) or (784,), float32 in [0, 1]), a float
        that carries the detector's digit probabilities for the second opinion."""
        p, digits = self.detector_outputs(np.asarray(image28).reshape(1, 784))
        return NotDigit(float(p[0]), digits[0])

    def not_digit_each(self, X: np.ndarray, reference_rows: np.ndarray | None = None) -> list[NotDigit]:
        """`not_digit_probability` of every image of a batch, in one run of the network; the images that
        `reference_rows` (bool per image) marks also get the CNN's second opinion, in one run of the CNN."""
        p, digits = self.detector_outputs(X)
        out = [NotDigit(float(v), d) for v, d in zip(p, digits, strict=True)]
        if reference_rows is not None and self.reference is not None and np.any(reference_rows):
            rows = np.flatnonzero(reference_rows)
            for i, opinion in zip(rows, self.reference_outputs(np.asarray(X)[rows]), strict=True):
                out[i].reference = opinion
        return out

    def needs_detector(self, model_name: str, proba: np.ndarray) -> bool:
        """False when the model's own confidence already makes the answer uncertain (see `is_uncertain`)."""
        return float(np.max(proba)) >= self.threshold(model_name)

    def is_uncertain(
        self,
        model_name: str,
        image28: np.ndarray,
        proba: np.ndarray,
        *,
        p_not_digit: float | Callable[[], float] | None = None,
        own_opinion: np.ndarray | None = None,
        alone: np.ndarray | None = None,
    ) -> bool:
        """The rule (module docstring) for one image; with `alone` (the model's probabilities before it asked
        its partner, `LoadedModel.predict_opinions`) the rule on those too: either flags.

        `proba` is the model's 10 probabilities for `image28`. When several models answer for the
        same image (model=all), pass `p_not_digit` computed once (`not_digit_probability(image28)`, which
        carries the detector's digit outputs), or a function that computes it once: it is only called
        when the model's own confidence does not already decide. A plain float makes the second opinion
        run the detector again.
        """
        if alone is not None and not np.array_equal(alone, proba):
            if self.is_uncertain(model_name, image28, proba, p_not_digit=p_not_digit, own_opinion=own_opinion):
                return True
            proba = alone  # the rule the thresholds were chosen for: on the model's own answer
        if not self.needs_detector(model_name, proba) or odd_shape(image28)[0]:
            return True  # flagged whatever the detector says: it need not run
        if p_not_digit is None:
            p_not_digit = self.not_digit_probability(image28)
        elif callable(p_not_digit):
            p_not_digit = p_not_digit()
        proba = np.asarray(proba, np.float64).reshape(-1)
        if p_not_digit > self.t_detector:
            return True
        t_joint = self.joint_threshold(model_name)
        if not self.opinion_can_flag(model_name, proba):
            return False
        digits = getattr(p_not_digit, "digits", None)
        if digits is None:
            digits = self.not_digit_probability(image28).digits
        if self.asks_cnn(model_name):
            reference = getattr(p_not_digit, "reference", None)
            if reference is None:
                reference = self.reference_outputs(image28)[0]
                if isinstance(p_not_digit, NotDigit):
                    p_not_digit.reference = reference  # the next model asking about this image reuses it
            second, normalise = self._cnn_second(model_name, reference, digits)
        else:
            second, normalise = self._second(model_name, digits, own_opinion)
        return bool(joint_confidence(proba, second, normalise=normalise)[0] < t_joint)

    def flags(
        self,
        model_name: str,
        X: np.ndarray,
        proba: np.ndarray,
        *,
        p_not_digit: np.ndarray | None = None,
        digit_proba: np.ndarray | None = None,
        reference: np.ndarray | None = None,
        own_opinion: np.ndarray | None = None,
        alone: np.ndarray | None = None,
    ) -> np.ndarray:
        """`is_uncertain` for a batch: (n,) bool. `digit_proba`: the detector's digit outputs, and
        `reference` the CNN's (`reference_outputs`), if known (else computed when needed); `own_opinion`:
        the model's own (`LoadedModel.predict_with_opinion`), for a model whose opinion is "members";
        `alone`: see `is_uncertain`."""
        if p_not_digit is None:
            p_not_digit, digit_proba = self.detector_outputs(X)
        if alone is not None:
            both = {"p_not_digit": p_not_digit, "digit_proba": digit_proba, "reference": reference,
                    "own_opinion": own_opinion}  # fmt: skip
            return self.flags(model_name, X, proba, **both) | self.flags(model_name, X, alone, **both)
        proba = np.asarray(proba, dtype=np.float64)
        proba = proba.reshape(len(p_not_digit), -1) if proba.size else proba.reshape(0, 10)
        out = (np.asarray(p_not_digit) > self.t_detector) | (proba.max(axis=1) < self.threshold(model_name))
        out |= odd_shape(X) if len(out) else out
        t_joint = self.joint_threshold(model_name)
        if t_joint > 0 and len(out):
            digits = digit_proba if digit_proba is not None else self.detector_outputs(X)[1]
            if self.asks_cnn(model_name):
                reference = reference if reference is not None else self.reference_outputs(X)
                second, normalise = self._cnn_second(model_name, reference, digits)
            else:
                second, normalise = self._second(model_name, digits, own_opinion)
            out |= joint_confidence(proba, second, normalise=normalise) < t_joint
        return out


CLIP = 8.0  #: standardised features are clipped to +-CLIP (an odd drawing cannot blow up the MLP)


def standardise(F: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip((F - mean) / scale, -CLIP, CLIP, dtype=np.float32)


def pack(mean: np.ndarray, scale: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Weights as float16, standardisation as float32, in a compressed .npz (no pickle)."""
    arrays = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    for i, (W, b) in enumerate(weights):
        arrays[f"W{i}"] = W.astype(np.float16)
        arrays[f"b{i}"] = b.astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack(payload: bytes) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        n = sum(1 for k in z.files if k.startswith("W"))
        weights = [(z[f"W{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)) for i in range(n)]
        return z["mean"].astype(np.float32), z["scale"].astype(np.float32), weights


def _bundled_dir() -> Path:
    from digitlab.models.registry import BUNDLED_DIR

    return BUNDLED_DIR


def load_detector(model_dir: Path | None = None) -> UncertaintyDetector:
    """Load the detector after checking its SHA-256 against `detector.json` (`ArtifactError` if not).

    A `detector.json` in `model_dir` (e.g. one rebuilt with `digitlab train detector`) wins over
    the one bundled with the package. A broken or tampered file is an error, never silently skipped.
    """
    from digitlab.models.artifacts import read_verified

    directory = detector_dir(model_dir)
    manifest, payload = read_verified(directory, DETECTOR_NAME)
    detector = from_payload(directory, manifest, payload)
    if set(CNN_OPINIONS) & set((manifest["thresholds"].get("opinion") or {}).values()):
        detector.reference = _reference_cnn(model_dir)
    return detector


def _reference_cnn(model_dir: Path | None) -> Any:
    """The CNN that gives the second opinion (`model_dir`'s, else the bundled one); None if it cannot be
    loaded: the detector's own digit outputs then stand in, a slightly different flag, never an error."""
    from digitlab.models.artifacts import ArtifactError
    from digitlab.models.registry import load_model

    try:
        return load_model("cnn", Path(model_dir) if model_dir is not None else _bundled_dir())
    except (ArtifactError, ImportError, OSError) as exc:
        import logging

        logging.getLogger(__name__).warning("the CNN's second opinion is off (%s): the detector's stands in", exc)
        return None


def detector_dir(model_dir: Path | None) -> Path:
    if model_dir is not None and (Path(model_dir) / f"{DETECTOR_NAME}.json").exists():
        return Path(model_dir)
    return _bundled_dir()


def from_payload(directory: Path, manifest: dict, payload: bytes) -> UncertaintyDetector:
    """The detector from verified bytes; `ArtifactError` if they are not a detector of these features."""
    from digitlab.models.artifacts import ArtifactError

    if manifest.get("format") != "npz" or "thresholds" not in manifest:
        raise ArtifactError(
            f"{directory / (DETECTOR_NAME + '.json')} is not a detector manifest: "
            "run `digitlab train detector`."
        )
    try:
        mean, scale, weights = unpack(payload)
    except Exception as exc:  # noqa: BLE001 -- a verified but unreadable file: say which and how to fix it
        raise ArtifactError(
            f"{directory / manifest['artifact']} could not be read ({type(exc).__name__}): "
            "run `digitlab train detector` to rebuild it."
        ) from None
    if not weights or weights[0][0].shape[0] != N_FEATURES or mean.shape != (N_FEATURES,):
        raise ArtifactError(
            f"{directory / manifest['artifact']} was built for other features: run `digitlab train detector`."
        )
    return UncertaintyDetector(
        manifest, mean, scale, weights, int(manifest.get("not_digit_index", NOT_DIGIT))
    )
