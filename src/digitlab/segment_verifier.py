"""Is this candidate of a written number exactly one whole digit? A small learned verifier for `segment`.

Why: the model that reads digits is sure of itself on crops that are not one digit (two overlapping digits
squeezed into one box read as a confident 9; half of a 0 as a confident 1), so a reading scored by the
model's probabilities alone merges touching and overlapping digits. The verifier looks only at the crop's
shape (gradient histograms of its 28x28 image) and geometry (width and height in writing heights, cuts
through ink on either side, how many pieces and strokes, how much ink), never at the model's answer, so it
serves every model alike. It is a one-hidden-layer network trained by `digitlab train segmenter`
(`training/segment_verifier.py`) on numbers composed from real handwriting that no benchmark reads, with
every pixel's digit known; its log-probability is added to each candidate's score.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.features import gradient_histograms

VERIFIER_NAME = "segment_verifier"
#: geometry features, in this order, before the gradient histograms
GEOMETRY = ("width", "height", "cut_left", "cut_right", "pieces", "strokes", "ink")
HOG_CELL, HOG_BINS = 7, 8
N_FEATURES = len(GEOMETRY) + (28 // HOG_CELL) ** 2 * HOG_BINS


def verifier_features(images: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """(n, 784) preprocessed crops in [0, 1] and (n, len(GEOMETRY)) geometry -> (n, N_FEATURES) float32."""
    hog = gradient_histograms(np.asarray(images, np.float32).reshape(-1, 28, 28), cell=HOG_CELL, bins=HOG_BINS)
    return np.hstack([np.asarray(geometry, np.float32), hog]).astype(np.float32)


@dataclass
class SegmentVerifier:
    """Standardise, one ReLU layer, a logistic output: log P(one whole digit)."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float

    def log_whole(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float32) - self.mean) / self.scale
        hidden = np.maximum(z @ self.w1 + self.b1, 0.0)
        logit = (hidden @ self.w2).ravel() + self.b2
        return -np.logaddexp(0.0, -logit)  # log sigmoid, stable at both ends

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scale=self.scale, w1=self.w1, b1=self.b1, w2=self.w2, b2=np.float32(self.b2))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> SegmentVerifier:
        from digitlab.models.artifacts import ArtifactError

        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                parts = {k: z[k].astype(np.float32) for k in ("mean", "scale", "w1", "b1", "w2", "b2")}
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{VERIFIER_NAME}: not a segment verifier ({exc})") from exc
        if parts["mean"].shape != (N_FEATURES,) or parts["w1"].shape[0] != N_FEATURES:
            raise ArtifactError(f"{VERIFIER_NAME}: made for other features ({parts['mean'].shape[0]} inputs)")
        return cls(parts["mean"], parts["scale"], parts["w1"], parts["b1"], parts["w2"], float(parts["b2"]))


def load_segment_verifier(model_dir: Path | None = None) -> SegmentVerifier:
    """The verifier in `model_dir` (rebuilt by `digitlab train segment_verifier`), else the bundled one; its
    SHA-256 checked against its manifest first (`ArtifactError` if it does not match)."""
    from digitlab.models.artifacts import read_verified
    from digitlab.models.registry import component_dir

    _manifest, payload = read_verified(component_dir(VERIFIER_NAME, model_dir), VERIFIER_NAME)
    return SegmentVerifier.from_bytes(payload)
