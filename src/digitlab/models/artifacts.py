"""Saving and loading model artefacts with a manifest whose SHA-256 is checked before loading.

A joblib artefact is a pickle: unpickling a file from elsewhere runs its code. So the bytes are
hashed and compared with the manifest written next to them at training time, and nothing is
unpickled unless they match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import DigitlabError


class ArtifactError(DigitlabError):
    code = "model_artifact_invalid"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions(*packages: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "scikit-learn", "onnxruntime", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # readable by the (non-root) service user, like any model file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(model_dir: Path, name: str, payload: bytes, fmt: str, manifest: dict[str, Any]) -> dict:
    """Write `<name>.<fmt>` and `<name>.json` (artefact first, so a manifest never points at nothing)."""
    artifact = f"{name}.{fmt}"
    full = {
        **manifest,
        "name": name,
        "artifact": artifact,
        "format": fmt,
        "sha256": sha256_bytes(payload),
        "size_bytes": len(payload),
        "trained_at": manifest.get("trained_at")
        or datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
    _atomic_write(Path(model_dir) / artifact, payload)
    return write_manifest(model_dir, name, full)


def write_manifest(model_dir: Path, name: str, manifest: dict[str, Any]) -> dict:
    """Rewrite `<name>.json` alone (a figure measured after the artefact was saved), atomically."""
    _atomic_write(Path(model_dir) / f"{name}.json", json.dumps(manifest, indent=1).encode())
    return manifest


def dump_joblib(obj: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=3)
    return buf.getvalue()


def read_manifest(model_dir: Path, name: str) -> dict:
    path = Path(model_dir) / f"{name}.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: run `digitlab train {name}` to build the model.") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable ({exc}): run `digitlab train {name}` to rebuild it.") from None
    if not isinstance(manifest, dict) or not {"artifact", "format", "sha256"} <= manifest.keys() or not all(
        isinstance(manifest[k], str) for k in ("artifact", "format", "sha256")
    ):
        raise ArtifactError(f"{path} is not a digitlab manifest: run `digitlab train {name}` to rebuild it.")
    return manifest


def read_verified(model_dir: Path, name: str) -> tuple[dict, bytes]:
    """The manifest and the artefact bytes, only if the bytes hash to the manifest's SHA-256."""
    manifest = read_manifest(model_dir, name)
    path = Path(model_dir) / Path(manifest["artifact"]).name
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: run `digitlab train {name}` to build it.") from None
    if sha256_bytes(payload) != manifest["sha256"]:
        raise ArtifactError(
            f"{path} does not match the SHA-256 in {name}.json (modified or from elsewhere; not loaded): "
            f"run `digitlab train {name}` to rebuild it."
        )
    return manifest, payload


def accuracy_and_confusion(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, list[list[int]]]:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(y_true, int), np.asarray(y_pred, int), labels=list(range(10)))
    return float(np.trace(cm) / max(cm.sum(), 1)), cm.tolist()
