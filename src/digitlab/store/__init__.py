"""Prediction store: every answered prediction kept in `user_predictions` (SQLite or PostgreSQL),
migrated automatically, with a durable spool so no record is lost while the database is away.

    store = from_settings(get_settings()).start()
    result = store.add(PredictionRecord(model_name="svm", predicted_digit=3, probabilities=[...]))
    store.set_feedback(result.id, 3) if result.id else store.set_feedback_by_uid(result.uid, 3)

See docs/store.md.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.store.records import AddResult, PredictionRecord, StoredPrediction

if TYPE_CHECKING:
    from digitlab.store.db import DatabaseUnavailableError
    from digitlab.store.spool import SpoolBusyError
    from digitlab.store.store import PredictionStore

#: imported when first asked for: the UI reads `digitlab.store.records` and needs no SQLAlchemy or Alembic
#: (1.6 s of its first page's imports)
_LAZY = {
    "DatabaseUnavailableError": "digitlab.store.db",
    "SpoolBusyError": "digitlab.store.spool",
    "PredictionStore": "digitlab.store.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AddResult",
    "DatabaseUnavailableError",
    "PredictionRecord",
    "PredictionStore",
    "SpoolBusyError",
    "StoredPrediction",
    "default_spool_dir",
    "from_settings",
]


def default_spool_dir(data_dir: Path) -> Path:
    """`<data_dir>/spool/<host>-<pid>`: never shared by two live processes (each API worker or replica has
    its own pid, replicas on other hosts their own name); spools of dead processes are adopted."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return Path(data_dir) / "spool" / f"{host}-{os.getpid()}"


def from_settings(settings, **kwargs) -> PredictionStore:
    """The store for these Settings (not started): DATABASE_URL / POSTGRES_* / SQLite in data_dir."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///"):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    spool_dir = settings.spool_dir or default_spool_dir(settings.data_dir)
    from digitlab.store.store import PredictionStore

    kwargs.setdefault("max_waiting_labels", settings.max_waiting_labels)
    return PredictionStore(url, spool_dir, **kwargs)
