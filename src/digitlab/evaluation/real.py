"""Real handwriting that is not MNIST (USPS, Semeion), shown to the models the way the app gets it.

MNIST test and `evaluate --drawn` both keep MNIST's writers and styles, so they overrate the models on
a new user's hand. USPS (ZIP codes on US mail) and Semeion (about 80 people in Italy) are by other
writers. Each 16x16 scan is shown in every `VIEWS` entry (an upload, a canvas-sized image in several
colour schemes, the writer's strokes re-drawn with the canvas pen), passed through the API's own
preprocessing (`preprocess.to_mnist`) and each model's `predict_proba`.

Held out (never used to train or calibrate anything): USPS `test_*` and Semeion's writer groups
`SEMEION_PARTS["heldout"]`. Of the rest, part "fit" may be trained on and part "calibration" is
kept for choosing the "uncertain" thresholds.
See docs/real.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from digitlab.errors import DigitlabError
from digitlab.evaluation.flags import predict_opinions
from digitlab.processes import fork_pool

SETS = ("usps", "semeion")
#: SHA-256 of the two files as published in the handwriting folder's SHA256SUMS
CHECKSUMS = {
    "usps.npz": "0b75c239846f0b2072053703f200b37934ebee49bc38fba47477792df7e51510",
    "semeion.npz": "a5875d15db2fe0abbe5ecff47f99e3324036d8b3e091bd4b3f1da4783c63cc14",
}
#: Semeion's file runs through the digits 0-9 once per group of writers (6 groups of 10-20 people,
#: each writing every digit twice); these groups (the last two, ~40 writers) are held out
SEMEION_PARTS = {"heldout": (4, 5), "calibration": (3,), "fit": (0, 1, 2)}
#: the last USPS training scans: the "calibration" part (the "uncertain" thresholds), not trained on
USPS_CALIBRATION = 2000
#: "heldout": never trained or calibrated on (the benchmark); "fit": may be trained on;
#: "calibration": kept out of training, to choose the "uncertain" thresholds on
PARTS = ("heldout", "fit", "calibration")

CANVAS = 280
#: how a scan reaches the models: as an uploaded file, or drawn at canvas size in a colour scheme
VIEWS = ("upload", "black-on-white", "white-on-black", "colour-on-transparent", "pen-redrawn")
CANVAS_VIEWS = ("black-on-white", "white-on-black", "colour-on-transparent", "pen-redrawn")
INK_HEIGHT = (0.6, 0.85)  #: ink height as a share of the canvas, uniform
EDGE_PX = 1.5  #: anti-aliased edge of the upscaled ink, in canvas px
_PENS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (0, 0, 0), (128, 0, 128), (255, 255, 255))
#: the mistakes issue 15 names (true, predicted); reported as a share of the true digit
NAMED_CONFUSIONS = ((9, 3), (7, 2), (1, 7), (4, 5), (3, 7), (9, 1), (4, 6))


class HandwritingError(DigitlabError):
    """The real-handwriting files are missing or damaged."""

    code = "handwriting_error"


# ================================================================================================
# Data
# ================================================================================================


def verify(path: Path) -> None:
    """Raise `HandwritingError` unless `path` has the published SHA-256 of its name."""
    path = Path(path)
    if not path.exists():
        raise HandwritingError(
            f"{path} is missing: point DIGITLAB_HANDWRITING_DIR at the folder with usps.npz and semeion.npz.",
            code="handwriting_missing",
        )
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != CHECKSUMS[path.name]:
        raise HandwritingError(
            f"{path} is corrupt (SHA-256 mismatch): replace it.", code="handwriting_corrupt"
        )


def semeion_groups(labels: np.ndarray) -> np.ndarray:
    """Writer group of each Semeion sample: a new group starts where the digit goes back down."""
    labels = np.asarray(labels, dtype=int)
    return np.r_[0, np.cumsum(np.diff(labels) < 0)]


def load_part(name: str, part: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 16, 16) ink bright, labels int64) of one set's part (see `PARTS`)."""
    if name not in SETS or part not in PARTS:
        raise ValueError(f"set must be one of {SETS} and part one of {PARTS}, not {name!r}/{part!r}")
    path = Path(directory) / f"{name}.npz"
    verify(path)
    with np.load(path, allow_pickle=False) as z:
        if name == "usps" and part == "heldout":
            return z["test_images"], z["test_labels"].astype(np.int64)
        if name == "usps":
            images, labels = z["train_images"], z["train_labels"].astype(np.int64)
            cut = len(labels) - USPS_CALIBRATION
            return (images[:cut], labels[:cut]) if part == "fit" else (images[cut:], labels[cut:])
        images, labels = z["images"], z["labels"].astype(np.int64)
    groups = semeion_groups(labels)
    keep = np.isin(groups, SEMEION_PARTS[part])
    return images[keep], labels[keep]


# ================================================================================================
# Views: what the app receives
# ================================================================================================


def upload_png(img16: np.ndarray) -> bytes:
    """The scan as a person would upload it: a small greyscale PNG, dark ink on white paper."""
    import io

    buf = io.BytesIO()
    Image.fromarray(255 - np.asarray(img16, np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def canvas_coverage(img16: np.ndarray, rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """Ink coverage (size, size) float32 in [0, 1]: the scan upscaled smoothly to a canvas drawing.

    The ink is 60-85 % of the canvas high (at most 95 % wide), anywhere on it. Bicubic upscaling, a
    blur of half a scan pixel and a soft threshold at half the peak turn the scan's pixels into a
    smooth, anti-aliased stroke of the writer's own width.
    """
    a = np.asarray(img16, np.float32) / 255.0
    rows, cols = np.nonzero(a > 0.1 * a.max())
    crop = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    k = min(rng.uniform(*INK_HEIGHT) * size / h, 0.95 * size / w)
    pad = 2  # scan pixels of background around the crop, so edges upscale like the inside
    soft = gaussian_filter(np.pad(crop, pad), 0.5)
    big = Image.fromarray(soft, "F").resize(
        (round((w + 2 * pad) * k), round((h + 2 * pad) * k)), Image.BICUBIC
    )
    v = np.asarray(big, np.float32)
    v = v / max(float(v.max()), 1e-6)
    cov = np.clip((v - 0.5) * (k / EDGE_PX) + 0.5, 0.0, 1.0)  # value 0.5 of the peak is the stroke's edge
    rows, cols = np.nonzero(cov > 0)
    cov = cov[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    canvas = np.zeros((size, size), np.float32)
    y = int(rng.integers(0, max(1, size - cov.shape[0]) + 1))
    x = int(rng.integers(0, max(1, size - cov.shape[1]) + 1))
    piece = cov[: size - y, : size - x]
    canvas[y : y + piece.shape[0], x : x + piece.shape[1]] = piece
    return canvas


def composite(cov: np.ndarray, scheme: str, rng: np.random.Generator) -> np.ndarray:
    """RGBA uint8 of a coverage map in a colour scheme (transparent: colour where drawn, alpha = ink)."""
    c = cov[..., None]
    if scheme == "black-on-white":
        rgb, alpha = 255.0 * (1 - c), np.full_like(cov, 255.0)
    elif scheme == "white-on-black":
        rgb, alpha = 255.0 * c, np.full_like(cov, 255.0)
    elif scheme == "colour-on-transparent":
        pen = np.asarray(_PENS[int(rng.integers(len(_PENS)))], np.float32)
        rgb, alpha = np.broadcast_to(pen, cov.shape + (3,)) * (cov[..., None] > 0), 255.0 * cov
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    rgb = np.broadcast_to(rgb, cov.shape + (3,))
    return np.rint(np.dstack([rgb, alpha])).astype(np.uint8)


def pen_redrawn(img16: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """The writer's strokes traced from the scan and re-drawn with the canvas pen (random width,
    size, place, slant, colour scheme), or None when the trace is not faithful enough."""
    from digitlab.preprocess import to_mnist
    from digitlab.synth.datasets import MIN_FIDELITY
    from digitlab.synth.render import render
    from digitlab.synth.trace import stroke_fidelity, strokes_from_mnist

    try:
        img28 = np.rint(to_mnist(np.asarray(img16, np.uint8)) * 255).astype(np.uint8)
    except DigitlabError:  # a scan the preprocessing reads as a dot or speck has no strokes to trace
        return None
    strokes = strokes_from_mnist(img28)
    if not strokes or stroke_fidelity(strokes, img28) < MIN_FIDELITY:
        return None
    return render(strokes, rng)


def view_image(img16: np.ndarray, view: str, rng: np.random.Generator) -> Any:
    """What the app receives for `view`: PNG bytes, an RGBA array, or None (no faithful trace)."""
    if view == "upload":
        return upload_png(img16)
    if view == "pen-redrawn":
        return pen_redrawn(img16, rng)
    return composite(canvas_coverage(img16, rng), view, rng)


# ================================================================================================
# Inputs: every sample in every view, preprocessed like the API does
# ================================================================================================


def _prepare_chunk(args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from digitlab.preprocess import to_mnist

    images, first, seed, views = args
    X = np.zeros((len(images) * len(views), 784), np.uint8)
    status = np.zeros(len(X), np.int8)  # 1 ok, 0 refused by the preprocessing, -1 no faithful trace
    for i, img in enumerate(images):
        rng = np.random.default_rng([int(seed), first + i])
        for j, view in enumerate(views):
            k = i * len(views) + j
            image = view_image(img, view, rng)
            if image is None:
                status[k] = -1
                continue
            try:
                X[k] = np.rint(to_mnist(image).reshape(784) * 255)
                status[k] = 1
            except DigitlabError:
                status[k] = 0
    return X, status, np.tile(np.arange(len(views)), len(images))


def prepare(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    views: Sequence[str] = VIEWS,
    jobs: int | None = None,
    chunk: int = 200,
) -> dict[str, np.ndarray]:
    """Every scan in every view through `to_mnist`: {"X" uint8 (m, 784), "labels", "view" (names),
    "status" (1 ok, 0 refused, -1 untraceable), "sample" (index into `images`)}; deterministic in seed."""
    tasks = [(images[i : i + chunk], i, seed, tuple(views)) for i in range(0, len(images), chunk)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    if jobs == 1:
        results = [_prepare_chunk(t) for t in tasks]
    else:
        with fork_pool(jobs) as pool:
            results = list(pool.map(_prepare_chunk, tasks))
    if not results:
        return {
            "X": np.zeros((0, 784), np.uint8),
            "labels": np.zeros(0, np.int64),
            "view": np.zeros(0, "<U24"),
            "status": np.zeros(0, np.int8),
            "sample": np.zeros(0, np.int64),
        }
    view_idx = np.concatenate([r[2] for r in results])
    return {
        "X": np.concatenate([r[0] for r in results]),
        "status": np.concatenate([r[1] for r in results]),
        "view": np.asarray(views)[view_idx],
        "labels": np.repeat(np.asarray(labels, np.int64), len(views)),
        "sample": np.repeat(np.arange(len(images)), len(views)),
    }


def prepared_part(
    name: str,
    part: str,
    directory: Path,
    *,
    seed: int = 0,
    count: int | None = None,
    views: Sequence[str] = VIEWS,
    jobs: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """`prepare` of one set's part (the first `count` of a seeded shuffle; all by default), cached."""
    images, labels = load_part(name, part, directory)
    order = np.random.default_rng([7, int(seed)]).permutation(len(images))[: count or len(images)]
    key = f"real_{name}_{part}_{seed}_{len(order)}_{'-'.join(views)}.npz"
    cache = Path(cache_dir) / key if cache_dir is not None else None
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    out = prepare(images[order], labels[order], seed=seed, views=views, jobs=jobs)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **out)
        os.replace(tmp, cache)
    return out


# ================================================================================================
# Scores
# ================================================================================================


def _share(mask: np.ndarray) -> float | None:
    return round(float(np.mean(mask)), 4) if np.size(mask) else None


def _grouped(keys: np.ndarray, correct: np.ndarray, order: Sequence) -> dict[str, dict[str, Any]]:
    keys = np.asarray(keys)
    return {
        str(k): {"accuracy": _share(correct[keys == k]), "n": int((keys == k).sum())}
        for k in order
        if (keys == k).any()
    }


def score(
    proba: np.ndarray, labels: np.ndarray, views: np.ndarray, flags: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy overall / on canvas views / per view / per digit, confusions, and the flag's rates.

    `proba` rows of refused drawings are zeros: they count as wrong (predicted None) and as flagged.
    """
    labels = np.asarray(labels)
    refused = proba.sum(axis=1) == 0
    pred = np.where(refused, -1, proba.argmax(axis=1))
    correct = pred == labels
    canvas = np.isin(views, CANVAS_VIEWS)
    pairs, counts = np.unique(np.stack([labels[~correct], pred[~correct]], 1), axis=0, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:8]
    out: dict[str, Any] = {
        "accuracy": _share(correct),
        "canvas_accuracy": _share(correct[canvas]),
        "n": len(labels),
        "refused": int(refused.sum()),
        "by_view": _grouped(views, correct, VIEWS),
        "by_digit": _grouped(labels, correct, range(10)),
        "confusions": [
            {
                "true": int(pairs[i][0]),
                "predicted": int(pairs[i][1]) if pairs[i][1] >= 0 else None,
                "n": int(counts[i]),
            }
            for i in top
        ],
        "named_confusions": {
            f"{t}->{p}": _share(pred[labels == t] == p) for t, p in NAMED_CONFUSIONS if (labels == t).any()
        },
    }
    if flags is not None:
        flags = np.asarray(flags, bool) | refused
        out["uncertain"] = {
            "wrong_flagged": _share(flags[~correct]),
            "correct_flagged": _share(flags[correct]),
            "accuracy_unflagged": _share(correct[~flags]),
        }
    return out


def model_outputs(
    data: Mapping[str, np.ndarray], predict_fns: Mapping[str, Callable], detector: Any = None
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """name -> (proba (m, 10) with zero rows where refused, uncertain flags or None), scored rows only."""
    usable = data["status"] >= 0
    X = data["X"][usable].astype(np.float32) / 255.0
    ok = data["status"][usable] == 1
    p_nd, digits = detector.detector_outputs(X) if detector is not None and len(X) else (None, None)
    reference = detector.reference_outputs(X, list(predict_fns)) if p_nd is not None else None
    out = {}
    for name, fn in predict_fns.items():
        proba, own = np.zeros((len(X), 10)), np.full((len(X), 10), 0.1)
        alone, has_own, asked = np.zeros((len(X), 10)), False, False
        answered_rows = np.flatnonzero(ok)
        for i in range(0, len(answered_rows), 1000):
            rows = answered_rows[i : i + 1000]
            proba[rows], chunk_own, chunk_alone = predict_opinions(fn, X[rows])
            if chunk_own is not None:
                own[rows], has_own = chunk_own, True
            alone[rows] = proba[rows] if chunk_alone is None else chunk_alone
            asked = asked or chunk_alone is not None
        flags = None
        if p_nd is not None:
            answered = np.where(ok[:, None], proba, 0.1)
            flags = detector.flags(name, X, answered, p_not_digit=p_nd, digit_proba=digits, reference=reference,
                                   own_opinion=own if has_own else None,
                                   alone=np.where(ok[:, None], alone, 0.1) if asked else None)  # fmt: skip
        out[name] = (proba, flags)
    return out


def evaluate_real(
    predict_fns: Mapping[str, Callable],
    directory: Path,
    *,
    detector: Any = None,
    count: int | None = None,
    seed: int = 0,
    sets: Sequence[str] = SETS,
    jobs: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The held-out benchmark: {"sets": {set: {"samples", "untraceable", "models": {name: score}}}}."""
    started = time.perf_counter()
    result: dict[str, Any] = {"count": count, "seed": seed, "views": list(VIEWS), "sets": {}}
    for name in sets:
        data = prepared_part(
            name, "heldout", directory, seed=seed, count=count, jobs=jobs, cache_dir=cache_dir
        )
        usable = data["status"] >= 0
        entry: dict[str, Any] = {
            "samples": len(np.unique(data["sample"])),
            "untraceable": int((~usable).sum()),
            "models": {},
        }
        for model, (proba, flags) in model_outputs(data, predict_fns, detector).items():
            entry["models"][model] = score(proba, data["labels"][usable], data["view"][usable], flags)
        result["sets"][name] = entry
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# ================================================================================================
# `digitlab evaluate --real`
# ================================================================================================


def evaluate_real_command(
    models: Sequence[str] | None, *, as_json: bool = False, count: int | None = None, seed: int = 0
) -> int:
    """`digitlab evaluate --real [--count N]`: held-out USPS and Semeion, per model, per view, per digit."""
    from rich.console import Console

    from digitlab.core.config import get_settings
    from digitlab.models import ModelRegistry

    if count is not None and count <= 0:
        raise DigitlabError(f"--count must be at least 1, not {count}.", code="invalid_argument")
    settings = get_settings()
    registry = ModelRegistry(settings.model_dir).load_all()
    names = list(models) if models else registry.ready_names()
    missing = [n for n in names if registry.get(n) is None]
    if not names or missing:
        raise DigitlabError(
            f"model(s) not ready in {settings.model_dir}: {', '.join(missing) or 'none trained'}; "
            "run `digitlab train` first.",
            code="model_not_ready",
        )
    err = Console(stderr=True)
    try:
        from digitlab.detector.runtime import load_detector

        detector = load_detector(settings.model_dir)
    except DigitlabError as exc:
        err.print(f"not-a-digit detector not loaded ({exc}); uncertainty rates left out")
        detector = None
    err.print(f"rendering and preprocessing held-out real handwriting ({', '.join(SETS)}) ...")
    result = evaluate_real(
        {n: registry.get(n).predict_proba for n in names},
        settings.handwriting_path,
        detector=detector,
        count=count,
        seed=seed,
    )
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result, Console())
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def print_report(result: Mapping[str, Any], console: Any) -> None:
    """One table per set: models as columns, rows for overall, views, digits, confusions, flag."""
    from rich.table import Table

    for set_name, entry in result["sets"].items():
        models = entry["models"]
        table = Table(title=f"{set_name} held out: {entry['samples']} scans x {len(VIEWS)} views (%)")
        table.add_column("group")
        for name in models:
            table.add_column(name, justify="right")
        first = next(iter(models.values()))
        rows = [
            ("accuracy", lambda m: _pct(m["accuracy"])),
            ("canvas views", lambda m: _pct(m["canvas_accuracy"])),
        ]
        rows += [
            (f"view {v}", lambda m, v=v: _pct(m["by_view"].get(v, {}).get("accuracy")))
            for v in first["by_view"]
        ]
        rows += [(f"digit {d}", lambda m, d=d: _pct(m["by_digit"][d]["accuracy"])) for d in first["by_digit"]]
        rows += [
            (f"{k} (share of {k[0]})", lambda m, k=k: _pct(m["named_confusions"][k]))
            for k in first["named_confusions"]
        ]
        if "uncertain" in first:
            rows += [
                ("mistakes flagged", lambda m: _pct(m["uncertain"]["wrong_flagged"])),
                ("correct flagged", lambda m: _pct(m["uncertain"]["correct_flagged"])),
            ]
        for label, cell in rows:
            table.add_row(label, *[cell(m) for m in models.values()])
        console.print(table)
        for name, m in models.items():
            top = ", ".join(f"{c['true']}->{c['predicted']} {c['n']}" for c in m["confusions"][:5])
            console.print(f"  {name}: top confusions {top}")
