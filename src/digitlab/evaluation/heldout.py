"""A model's accuracy on real handwriting by writers no model learned from, measured when it is built.

MNIST test says 99.6 % where people's own drawings get 95-98 %: the manifest (and so the Models page) carries
both. The figure is `digitlab evaluate --real`'s accuracy: USPS test and Semeion's held-out writers, each scan
as an upload and as four canvas drawings; a drawing the preprocessing refuses counts as wrong. Nothing is
chosen or tuned on it (the models learn from the 'fit' parts and tune on the 'calibration' parts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.evaluation.real import SETS, prepared_part
from digitlab.training.progress import log

#: the manifest's metric: both sets' drawings pooled
METRIC = "real_heldout_accuracy"


def set_metric(name: str) -> str:
    """The manifest's metric of one set, e.g. `real_heldout_usps_accuracy`."""
    return f"real_heldout_{name}_accuracy"


@dataclass(frozen=True)
class HeldOut:
    """The held-out drawings, preprocessed: rows the preprocessing could not trace are left out."""

    X: np.ndarray  #: float32 (m, 784) in [0, 1], as the models take them (zeros where refused)
    labels: np.ndarray  #: (m,) true digits
    sets: np.ndarray  #: (m,) the set each row comes from
    refused: np.ndarray  #: (m,) bool: the preprocessing said "not a digit" (counts as wrong)


def load_heldout(directory: Path, cache_dir: Path | None = None, *, count: int | None = None) -> HeldOut | None:
    """Both sets' held-out part in every view (cached in `cache_dir`: ~30 s on 2 cores the first time); None,
    said why, without the sets. `count`: the first N scans of each set's seeded shuffle (tests)."""
    try:
        parts = {name: prepared_part(name, "heldout", Path(directory), count=count, cache_dir=cache_dir) for name in SETS}
    except (DigitlabError, OSError) as exc:
        log(f"not measured on held-out real handwriting ({exc})")
        return None
    usable = {name: part["status"] >= 0 for name, part in parts.items()}
    return HeldOut(
        X=np.concatenate([part["X"][usable[n]] for n, part in parts.items()]).astype(np.float32) / np.float32(255),
        labels=np.concatenate([part["labels"][usable[n]] for n, part in parts.items()]),
        sets=np.concatenate([np.full(int(usable[n].sum()), n) for n in parts]),
        refused=np.concatenate([part["status"][usable[n]] == 0 for n, part in parts.items()]),
    )


def heldout_metrics(proba: np.ndarray, data: HeldOut) -> dict[str, float]:
    """{METRIC: pooled accuracy, set_metric(name): each set's} of probabilities (m, 10) for `data.X`."""
    right = ~data.refused & (np.asarray(proba).argmax(axis=1) == data.labels)
    out = {METRIC: round(float(right.mean()), 5)}
    for name in SETS:
        rows = data.sets == name
        if rows.any():
            out[set_metric(name)] = round(float(right[rows].mean()), 5)
    return out


def measure_saved(
    model_dir: Path, name: str, handwriting_dir: Path, cache_dir: Path | None = None, *, count: int | None = None
) -> dict:
    """Add the accuracy of the saved model `name` (alone, without a partner it may ask when serving) on the
    held-out real handwriting to its manifest in `model_dir`; the artefact is not touched. Returns the manifest
    (as it was, without the sets). `count`: as `load_heldout`'s."""
    from digitlab.models.artifacts import read_verified, write_manifest
    from digitlab.models.registry import model_from_payload

    manifest, payload = read_verified(Path(model_dir), name)
    data = load_heldout(handwriting_dir, cache_dir, count=count)
    if data is None:
        return manifest
    manifest["metrics"].update(heldout_metrics(model_from_payload(name, manifest, payload).predict_proba(data.X), data))
    log(f"{name}: {100 * manifest['metrics'][METRIC]:.2f}% on held-out real handwriting (USPS, Semeion)")
    return write_manifest(Path(model_dir), name, manifest)
