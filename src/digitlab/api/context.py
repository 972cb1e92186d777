"""What every request shares, built once at start-up (`app.state.ctx`): settings, models, store, metrics."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from digitlab.api.metrics import Metrics
from digitlab.core.config import Settings
from digitlab.models.registry import ModelRegistry

if TYPE_CHECKING:  # the store is opened by the lifespan (SQLAlchemy is imported there, not here)
    from digitlab.detector.runtime import UncertaintyDetector
    from digitlab.line_reader import LineReader
    from digitlab.segment_verifier import SegmentVerifier
    from digitlab.store import PredictionStore


@dataclass
class AppContext:
    """Everything a request needs; `store` and `detector` are None when they could not be opened."""

    settings: Settings
    registry: ModelRegistry
    metrics: Metrics
    store: PredictionStore | None = None
    detector: UncertaintyDetector | None = None  # flags drawings that are not digits
    segment_verifier: SegmentVerifier | None = None  # /read: which crops are one whole digit
    line_reader: LineReader | None = None  # /read: the whole line read without cuts, a second opinion
    cpu_limiter: anyio.CapacityLimiter | None = None  # preprocessing + inference
    batcher: Any = None  # the predict route's micro-batches: an api.batching.PredictionBatcher (it imports this)
    manifest_keys: dict[str, tuple | None] = field(default_factory=dict)  # `upkeep.files_key` of each model
    ready_at: float | None = None
    #: uids of this process's recent answers `logged: false` (neither the database nor the spool took them):
    #: a label for one is refused at once (it was answered "queued" and then dropped)
    unlogged: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: model name -> SHA-256 of a promoted learned version this process could not load (tried once)
    unloadable: dict[str, str] = field(default_factory=dict)

    UNLOGGED_KEPT = 10_000

    def note_unlogged(self, uids) -> None:
        for uid in uids:
            self.unlogged[uid] = None
        while len(self.unlogged) > self.UNLOGGED_KEPT:
            self.unlogged.popitem(last=False)
