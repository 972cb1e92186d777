"""`digitlab train [MODEL ...]`: which trainings to run, in which order, and the closing line."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from digitlab.cli.learn import stopped
from digitlab.core.config import get_settings
from digitlab.errors import DigitlabError
from digitlab.models.artifacts import ArtifactError, read_manifest
from digitlab.models.registry import CLASSICAL_MODELS, MODEL_SPECS, manifest_path, unknown_models
from digitlab.training.classical import train_models
from digitlab.training.cnn import train_cnn_with_drawings
from digitlab.training.cnn_net import has_torch
from digitlab.training.lock import training_lock
from digitlab.training.progress import log


def train_command(
    names: list[str],
    *,
    limit: int | None = None,
    jobs: int | None = None,
    calibrate_only: bool = False,
    out_dir: Path | None = None,
) -> int:
    """`digitlab train [MODEL ...]`: classical models by default; `cnn`, `detector`, `segment_verifier` and
    `line_reader` on request.

    The detector goes last but one: its thresholds are calibrated against the models just trained; the
    segment verifier reports on the numbers read with the CNN and that detector.
    """
    settings = get_settings()
    requested = list(names) or list(CLASSICAL_MODELS)
    extras = ("detector", "segment_verifier", "line_reader")
    if (unknown := unknown_models(requested, [*MODEL_SPECS, *extras])) is not None:
        raise DigitlabError(unknown)
    for option, given, goes_with in (("--calibrate-only", calibrate_only, ("detector",)), ("--out", out_dir, extras)):
        if given and not set(requested) <= set(goes_with):  # it was ignored: `train svm --out X` replaced the
            raise DigitlabError(  # served svm in DIGITLAB_MODEL_DIR
                f"{option} goes with {' or '.join([', '.join(goes_with[:-1]), goes_with[-1]] if len(goes_with) > 1 else goes_with)} only; "
                f"{', '.join(n for n in requested if n not in goes_with)} "
                f"{'is' if len(requested) == 1 else 'are'} written to DIGITLAB_MODEL_DIR ({settings.model_dir})",
                code="bad_arguments")  # fmt: skip
    # before minutes of work (it was found out when saving, or after seconds of style drawings: a probe)
    _writable_folder(out_dir if out_dir is not None else settings.model_dir,
                     "--out" if out_dir is not None else "DIGITLAB_MODEL_DIR")  # fmt: skip
    needs_torch = [n for n in ("cnn", "line_reader") if n in requested]
    if needs_torch and not has_torch():  # before minutes of data preparation
        raise DigitlabError(f"training the {needs_torch[0].replace('cnn', 'CNN').replace('_', ' ')} needs PyTorch: "
                            "pip install -e '.[cnn]' (or pip install torch)")  # fmt: skip
    if limit is None and settings.train_limit:  # two newcomers expected it to make quick models here too
        log(f"note: DIGITLAB_TRAIN_LIMIT={settings.train_limit} is for `digitlab run`'s first start: this trains "
            f"on all of MNIST (minutes); `digitlab train --limit {settings.train_limit}` trains quick models")
    for signum in (signal.SIGTERM, signal.SIGHUP):  # like Ctrl-C: the "training" markers go with the run (they
        signal.signal(signum, stopped)  # stayed, and the API said "training" for good)
    with training_lock(settings.model_dir):  # one trainer per model folder (`TrainingBusy` otherwise)
        return _train(settings, requested, limit=limit, jobs=jobs, calibrate_only=calibrate_only, out_dir=out_dir)


def _writable_folder(folder: Path, name: str) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"{name} {folder} cannot be used as a folder ({exc.strerror or exc})",
                            code="invalid_folder") from None  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DigitlabError(f"{name} {folder} is not writable", code="invalid_folder")


def _served_accuracy(name: str, model_dir: Path) -> float | None:
    """MNIST test accuracy of the model that serves `name` now (trained or bundled); None if none or unreadable."""
    path = manifest_path(name, model_dir)
    try:
        return float(read_manifest(path.parent, name)["metrics"]["mnist_test_accuracy"]) if path else None
    except (ArtifactError, ValueError, TypeError, KeyError):
        return None


def _say_replaced(before: dict[str, float | None], model_dir: Path, limit: int) -> None:
    """A quick run replaces the served model whatever it was: `train cnn --limit 100` swapped the bundled CNN
    (99 %) for one at chance level with not a word; say it, and how to get the full model back."""
    for name, was in before.items():
        now = _served_accuracy(name, model_dir)
        if was is None or now is None or now >= was - 0.005:
            continue
        back = (f"delete {model_dir}/{name}.json to serve the bundled one again, or run `digitlab train {name}`"
                if MODEL_SPECS[name].bundled else f"`digitlab train {name}` (no --limit) builds the full model")
        log(f"note: {name} is now a quick model from {limit:,} images: {now * 100:.1f} % on MNIST test, where the one it "
            f"replaced had {was * 100:.1f} %; {back}")


def _train(settings, requested: list[str], *, limit, jobs, calibrate_only: bool, out_dir: Path | None) -> int:
    """Each model is written whole when it is done: a run stopped half-way keeps the ones it finished (a quick run
    stopped so says which it replaced: it said nothing, a probe, session 45)."""
    started = time.perf_counter()
    before = {n: _served_accuracy(n, settings.model_dir) for n in requested if n in MODEL_SPECS} if limit else {}
    try:
        _train_each(settings, requested, limit=limit, jobs=jobs, calibrate_only=calibrate_only, out_dir=out_dir)
    finally:
        if limit:
            _say_replaced(before, settings.model_dir, limit)
    log(f"done in {time.perf_counter() - started:.0f} s; artefacts in {settings.model_dir}")
    return 0


def _train_each(settings, requested: list[str], *, limit, jobs, calibrate_only: bool, out_dir: Path | None) -> None:
    if "cnn" in requested:
        train_cnn_with_drawings(settings, limit=limit, jobs=jobs)
    classical_names = [n for n in requested if n in CLASSICAL_MODELS]
    if classical_names:
        from digitlab.evaluation.heldout import load_heldout
        from digitlab.training.coverage import REAL_VARIANTS, coverage_set

        # "training" from the start: the minute or two of style drawings and real handwriting before the fits
        # showed them as missing ("Not trained: ... digitlab train") while `run` said "training" (a tour, session 32)
        markers = [Path(settings.model_dir) / f"{name}.training" for name in classical_names]
        Path(settings.model_dir).mkdir(parents=True, exist_ok=True)
        try:  # (touched inside: a signal right after the first touch left it, "training" for good)
            for marker in markers:
                marker.touch()
            images, labels, summary = coverage_set(settings, limit=limit, jobs=jobs, real_variants=REAL_VARIANTS)
            real_test = None if limit else load_heldout(settings.handwriting_path, settings.data_dir / "cache")
        except BaseException:
            for marker in markers:
                marker.unlink(missing_ok=True)
            raise
        train_models(
            classical_names, settings.model_dir, limit=limit, jobs=jobs, mnist_dir=settings.mnist_dir,
            extra=(images, labels), extra_summary=summary, real_test=real_test,
        )
    if "detector" in requested:
        from digitlab.training.detector import train_detector_command

        train_detector_command(out_dir=out_dir, jobs=jobs, calibrate_only=calibrate_only)
    if "segment_verifier" in requested:
        from digitlab.training.segment_verifier import train_segment_verifier_command

        train_segment_verifier_command(out_dir=out_dir)
    if "line_reader" in requested:
        from digitlab.training.line_reader import COUNT, train_line_reader_command

        train_line_reader_command(out_dir=out_dir, count=limit or COUNT, check=min(limit or 500, 500), jobs=jobs or 2)
