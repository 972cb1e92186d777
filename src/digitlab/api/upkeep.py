"""Keeping a running API current: models whose files appear or change are (re)loaded, gauges refreshed,
and one warm-up prediction per model at start-up so the first real request is not the slow one.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from digitlab.api.context import AppContext
from digitlab.errors import DigitlabError
from digitlab.models.artifacts import ArtifactError
from digitlab.models.registry import MODEL_SPECS, is_training, manifest_path, model_from_payload

log = logging.getLogger("digitlab.api")

#: Seconds between checks for models whose training finished (a few stat calls; no reads when unchanged).
MODEL_REFRESH_SECONDS = 5.0


def manifest_key(name: str, model_dir: Path) -> tuple[str, float] | None:
    path = manifest_path(name, model_dir)
    try:
        return (str(path), path.stat().st_mtime) if path else None
    except OSError:  # removed between the look and the stat
        return None


def files_key(ctx: AppContext, name: str) -> tuple | None:
    """What is looked at to notice a model's files changed: its manifest, and the artefact it is served from
    (deleted or rewritten under an unchanged manifest, it was still "ready" without an error)."""
    key = manifest_key(name, ctx.settings.model_dir)
    return None if key is None else (*key, ctx.registry.artefact_key(name))


def refresh_models(ctx: AppContext) -> None:
    """(Re)load a model whose manifest or artefact appeared or changed since the last look; a broken artefact is
    tried once per manifest change, not every few seconds. Loaded models are swapped atomically.
    A learned version promoted in the database wins over the files (see `refresh_learned`)."""
    refresh_learned(ctx)
    learned = ctx.registry.learned_names()
    for name in MODEL_SPECS:
        if name in learned or is_training(name, ctx.settings.model_dir):
            continue  # served from the database, or wait for the finished files
        key = files_key(ctx, name)
        if key is None or key == ctx.manifest_keys.get(name):
            continue
        ctx.manifest_keys[name] = key
        before = ctx.registry.get(name)
        ctx.registry.refresh(name)
        after = ctx.registry.get(name)
        if after is not None and after is not before:
            log.info("model %s %s (version %s)", name, "reloaded" if before else "loaded", after.version)


def refresh_learned(ctx: AppContext) -> None:
    """Serve the versions promoted in the database (every replica polls the same table, so a promotion or
    a rollback reaches all of them within MODEL_REFRESH_SECONDS). A model whose learned versions were all
    rolled back goes back to its files. The database being away changes nothing: keep what is served."""
    if ctx.store is None:
        return
    try:
        promoted = ctx.store.promoted_versions()
    except DigitlabError:
        return
    for name, (version, sha256) in promoted.items():
        current = ctx.registry.get(name)
        if name not in MODEL_SPECS:
            continue
        # served already: the same bytes *and* the same version (a learning run on unchanged data builds the
        # very model again, and a promotion or rollback between such twins was never noticed: the API kept
        # naming, and recording, the other version)
        if (current is not None and current.manifest.get("sha256") == sha256 and name in ctx.registry.learned_names()
                and str(current.version) == str(version)):  # fmt: skip
            continue
        if ctx.unloadable.get(name) == sha256:  # said once: it was read (1 MB) and logged every poll
            continue
        try:
            manifest, payload = ctx.store.load_version(name, version)  # (its bytes checked against `sha256`)
            # the hash the next poll compares: a CNN stored before session 11 named its parent's, and was
            # loaded again every poll, for as long as it was served (every worker, every replica)
            model = model_from_payload(name, {**manifest, "sha256": sha256}, payload)
            model.predict_proba(np.zeros((1, 784), np.float32))  # warm, before it takes requests
        except Exception as exc:  # noqa: BLE001 - a broken version must not take the served one down
            if isinstance(exc, DigitlabError) and not isinstance(exc, ArtifactError):  # the database away:
                log.warning("learned %s version %s not loaded yet: %s", name, version, exc)  # the next poll
                continue  # tries again
            # said once per version (it was read, 1 MB, and logged every poll by every worker)
            log.error("learned %s version %s cannot be loaded; the served one stays until another is promoted: "
                      "%s", name, version, exc)  # fmt: skip
            ctx.unloadable[name] = sha256
            continue
        ctx.registry.install(model, learned=True)
        log.info("model %s now serves learned version %s", name, version)
    for name in ctx.registry.learned_names() - promoted.keys():
        log.info("model %s: no learned version promoted any more, back to its files", name)
        # the files' model swapped in in one step (`refresh` installs it over the learned one): the learned one
        # was dropped first and the files loaded after it, and requests in between were 503 "not trained"
        ctx.registry.refresh(name)
        if name in ctx.registry.learned_names():  # no files to go back to, or they do not load
            ctx.manifest_keys.pop(name, None)  # (the file check of `refresh_models` tries them again)
            ctx.registry.forget_learned(name)
        else:
            ctx.manifest_keys[name] = files_key(ctx, name)


def refresh_gauges(ctx: AppContext) -> str:
    """This worker's model-readiness, database and spool gauges; returns "ok" | "unavailable" for the
    database. Set at every scrape and every MODEL_REFRESH_SECONDS, so that with several workers the
    combined values are at most that old."""
    m = ctx.metrics
    for name, state in ctx.registry.status().items():
        m.model_ready.labels(name).set(1 if state == "ready" else 0)
    database = "unavailable"
    if ctx.store is not None:
        try:
            state = ctx.store.health()
            own = ctx.store.pending()  # this worker's own spool: /metrics adds the workers' up
        except Exception as exc:  # noqa: BLE001 - a failing health check means "down", never a failing scrape
            log.warning("database health check failed: %s: %s", type(exc).__name__, exc)
        else:
            m.spool_pending.set(own)
            database = state["database"]
    m.database_up.set(1 if database == "ok" else 0)
    return database


def sample_drawing(size: int = 280) -> bytes:
    """A drawn '7' as a PNG (dark pen on white, like the UI's canvas): warm-up, tests and the benchmark."""
    from PIL import Image, ImageDraw

    k = size / 280
    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).line(
        [(80 * k, 62 * k), (196 * k, 58 * k), (150 * k, 140 * k), (118 * k, 226 * k)],
        fill="#1f2340",
        width=max(1, round(18 * k)),
        joint="curve",
    )
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def warm_up(ctx: AppContext) -> None:
    """One prediction per loaded model (not logged), so the first real request is not the slow one."""
    from digitlab.preprocess import to_mnist, to_png

    try:
        image = to_mnist(sample_drawing())
        to_png(image)
        for name in ctx.registry.ready_names():
            ctx.registry.get(name).predict_proba(image.reshape(1, 784))
        if ctx.detector is not None:
            ctx.detector.not_digit_probability(image)
    except Exception as exc:  # noqa: BLE001
        # a warm-up problem must not stop the server; real requests will report it
        log.warning("warm-up failed: %s: %s", type(exc).__name__, exc)
