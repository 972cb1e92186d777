"""`GET /api/v1/models`: every known model with its status, version and test metrics."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter

from digitlab.api.context import AppContext
from digitlab.api.deps import Ctx
from digitlab.api.schemas import ModelInfo
from digitlab.models.registry import BUNDLED_DIR, MODEL_SPECS

router = APIRouter(prefix="/api/v1", tags=["models"])


def model_list(ctx: AppContext) -> list[ModelInfo]:
    registry = ctx.registry
    status = registry.status()
    default = registry.default_name(ctx.settings.default_model)
    errors = registry.errors()
    out = []
    for name, spec in MODEL_SPECS.items():
        model = registry.get(name)
        manifest = model.manifest if model is not None else {}
        metrics = {
            k: float(v)
            for k, v in (manifest.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        out.append(
            ModelInfo(
                name=name,
                display_name=spec.display_name,
                description=spec.description,
                status=status[name],
                version=str(model.version if model is not None else spec.version),
                default=name == default,
                metrics=metrics,
                confusion_matrix=manifest.get("confusion_matrix"),
                size_bytes=manifest.get("size_bytes"),
                trained_at=manifest.get("trained_at"),
                training_seconds=manifest.get("training_seconds"),
                train_samples=manifest.get("train_samples"),
                asks=model.partner.name if model is not None and model.partner is not None else None,
                error=_error(_without_folders(errors.get(name), ctx.settings.model_dir), model),
            )
        )
    return out


def _without_folders(error: str | None, model_dir: Path) -> str | None:
    """The error with the server's model folders left out ("svm.json is unreadable"): this list is public, and
    said where the server keeps its files ("/srv/app/models/svm.json ...")."""
    if error is None:
        return None
    for folder in sorted({str(model_dir), str(Path(model_dir).resolve()), str(BUNDLED_DIR)}, key=len, reverse=True):
        error = error.replace(folder + os.sep, "").replace(folder, "the model folder")
    return error


def _error(error: str | None, served) -> str | None:
    """Why the model's artefact could not be loaded; for a model still served, that it is the one loaded before
    (a broken artefact written over a served one was only in the log: `/models` said ready, no error, and the
    next start found the model broken; a probe, session 27)."""
    if error is None or served is None:
        return error
    return f"the artefact on disk could not be loaded ({error}); version {served.version} loaded before is served until it is fixed"


@router.get("/models", response_model=list[ModelInfo])
def list_models(ctx: Ctx):
    """Models in preference order; `default` marks the one used when a request names none."""
    return model_list(ctx)
