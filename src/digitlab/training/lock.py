"""One trainer per model folder: `digitlab train` holds an exclusive lock on `<model dir>/.train.lock` while it
runs (the kernel releases it when the process dies, however it dies).

Why: a second `digitlab run` (or a `digitlab train` by hand) on a folder already being trained started a
second trainer: twice the CPU on the same models, and on exit it removed the first trainer's "training"
markers, so its models showed as missing while they were still being built.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digitlab.errors import DigitlabError

LOCK_FILE = ".train.lock"


class TrainingBusy(DigitlabError):
    """Another process is training into this model folder."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "another process"


@contextmanager
def training_lock(model_dir: Path) -> Iterator[None]:
    """Hold the folder's training lock for the block, or raise `TrainingBusy` at once (never waits). A folder
    where no lock file can be made (read-only) is trained without one: writing the models there fails anyway."""
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingBusy(
                f"{_holder(fd)} is already training models into {model_dir}: wait until it finishes "
                "(its models show as 'training'), or stop it first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        yield
    finally:
        os.close(fd)  # (releases the lock)


def trainer_elsewhere(model_dir: Path) -> str | None:
    """Who holds the folder's training lock ("pid 123"), or None when nobody trains into it now."""
    try:
        fd = os.open(Path(model_dir) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None
