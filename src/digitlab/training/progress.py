"""Progress for long training jobs: timestamped lines on stderr, and rich bars on a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


class EpochProgress:
    """Per-epoch lines on stderr (always), plus a rich progress bar over the batches on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = None
        self.bar = None
        if enabled:
            from rich.console import Console

            self.console = Console(file=sys.stderr, highlight=False)

    def line(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.done, self.batches = 0, batches
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"cnn epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                console=self.console, transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("train", total=batches, loss=float("nan"))

    def advance(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss)
        elif self.enabled:  # log files: a line at each quarter of the epoch instead of a live bar
            self.done += 1
            if self.done < self.batches and self.done % max(1, self.batches // 4) == 0:
                self.line(f"  {self.done}/{self.batches} batches, loss {loss:.4f}")

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


_listeners: list[Callable[[str], None]] = []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
    for listener in tuple(_listeners):
        listener(message)


@contextlib.contextmanager
def listening(callback: Callable[[str], None]) -> Iterator[None]:
    """Also hand every `log` line to `callback` meanwhile (`digitlab learn` keeps its job's progress with them:
    the API's "Learn now" showed 0 % for most of a run, the steps only on the command line's stderr)."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


class Bar:
    """A rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(task, n)
