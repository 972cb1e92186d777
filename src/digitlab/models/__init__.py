"""Models: specs, verified artefact loading, and the registry the API serves from."""

from digitlab.models.artifacts import ArtifactError
from digitlab.models.registry import (
    CLASSICAL_MODELS,
    MODEL_SPECS,
    LoadedModel,
    ModelRegistry,
    ModelSpec,
    load_model,
)

__all__ = [
    "CLASSICAL_MODELS",
    "MODEL_SPECS",
    "ArtifactError",
    "LoadedModel",
    "ModelRegistry",
    "ModelSpec",
    "load_model",
]
