"""A tiny model made a partner the CNN asks (`registry.can_partner`) for the tests of the second opinion."""

from __future__ import annotations

import json
from pathlib import Path


def as_fully_trained(model_dir: Path, name: str = "svm") -> None:
    """Rewrite `name`'s manifest to say it learned all of MNIST and the real handwriting, so that a tiny
    model may be a partner (`registry.can_partner`; the artefact and its checksum stay as they are)."""
    path = Path(model_dir) / f"{name}.json"
    manifest = json.loads(path.read_text())
    manifest["train_samples"] = 104_049
    manifest["extra_training_data"] = {**(manifest.get("extra_training_data") or {}), "real_handwriting": 13_527}
    path.write_text(json.dumps(manifest))
