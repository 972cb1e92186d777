"""`digitlab evaluate [MODEL ...] [--json]`: the MNIST test table (or JSON) of the saved models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from digitlab.core.config import get_settings
from digitlab.errors import DigitlabError
from digitlab.evaluation.mnist import evaluate_models
from digitlab.models.registry import MODEL_SPECS, unknown_models


def evaluate_command(names: list[str], *, as_json: bool = False) -> int:
    settings = get_settings()
    if (unknown := unknown_models(names)) is not None:  # before MNIST is looked for (or downloaded): a typo is a typo
        raise DigitlabError(unknown)
    skipped = None
    if not names:  # every saved model: one whose files are damaged is said and left out (as --drawn does)
        names = [n for n in MODEL_SPECS if _available(n, settings.model_dir)]
        if not names:
            raise DigitlabError(f"no trained models in {settings.model_dir}: run `digitlab train` first.")
        skipped = _say_skipped
    rows = evaluate_models(names, settings.model_dir, mnist_dir=settings.mnist_dir, skipped=skipped,
                           scored=_say_scored)  # (a run printed nothing until its table, half a minute or more)
    if not rows:
        raise DigitlabError(f"no model in {settings.model_dir} could be loaded: run `digitlab train` to rebuild them.")
    if as_json:
        print(json.dumps({row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="MNIST test set (10,000 images)")
    for column in ("model", "version", "accuracy", "errors", "ms / image (batch)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            row["model"], row["version"], f"{row['mnist_test_accuracy']:.2%}", str(row["errors"]),
            f"{row['ms_per_image_batch']:.3f}",
        )
    Console().print(table)
    return 0


def _say_scored(row: dict) -> None:
    print(f"{row['model']}: {row['mnist_test_accuracy']:.2%} on the 10,000 MNIST test images", file=sys.stderr,
          flush=True)  # fmt: skip


def _say_skipped(name: str, exc: Exception) -> None:
    print(f"{name}: not scored: {exc}", file=sys.stderr, flush=True)


def _available(name: str, model_dir: Path) -> bool:
    from digitlab.models.registry import manifest_path

    return manifest_path(name, model_dir) is not None
