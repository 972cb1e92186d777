"""`digitlab evaluate --drawn`: MNIST test digits re-drawn as canvas strokes -> PNG -> the API's
preprocessing -> each model; accuracy by style, pen width, height, colour scheme.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from digitlab.synth.datasets import SCRIBBLE_KINDS, drawn_dataset, scribbles
from digitlab.synth.glyphs import STYLES
from digitlab.synth.render import SCHEMES

WIDTH_BUCKETS = ((8, 12), (13, 18), (19, 25))
HEIGHT_BUCKETS = ((0.35, 0.5), (0.5, 0.7), (0.7, 0.85))



CONFIDENCE_LEVELS = (0.5, 0.7, 0.9)


def _bucket(value: float, buckets, fmt) -> str:
    for lo, hi in buckets:
        if value <= hi + 1e-9:
            return fmt(lo, hi)
    lo, hi = buckets[-1]
    return fmt(lo, hi)


def _width_bucket(width: float) -> str:
    return _bucket(width, WIDTH_BUCKETS, lambda lo, hi: f"{lo}-{hi} px")


def _height_bucket(frac: float) -> str:
    return _bucket(frac, HEIGHT_BUCKETS, lambda lo, hi: f"{round(lo * 100)}-{round(hi * 100)} %")


def _preprocess_all(pngs: Sequence[bytes], preprocess: Callable, progress) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, 784) float32, ok (n,) bool): images the preprocessing refused are zeros and not ok."""
    from digitlab.errors import DigitlabError

    X = np.zeros((len(pngs), 784), dtype=np.float32)
    ok = np.ones(len(pngs), dtype=bool)
    for i, png in enumerate(pngs):
        try:
            X[i] = np.asarray(preprocess(png), dtype=np.float32).reshape(784)
        except DigitlabError:
            ok[i] = False
        if progress is not None:
            progress(1)
    return X, ok


def _predict(fn: Callable, X: np.ndarray, chunk: int = 1000) -> np.ndarray:
    if len(X) == 0:
        return np.zeros((0, 10))
    return np.vstack([np.asarray(fn(X[i : i + chunk]), dtype=np.float64) for i in range(0, len(X), chunk)])


def _accuracy_by(keys: Sequence[str], correct: np.ndarray, order: Sequence[str] | None = None) -> dict:
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    names = [k for k in (order or sorted(groups)) if k in groups]
    return {k: {"accuracy": round(float(correct[groups[k]].mean()), 4), "n": len(groups[k])} for k in names}


def evaluate_drawn(
    predict_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    count: int = 2000,
    seed: int = 0,
    *,
    source: str = "mixed",
    scribble_count: int = 0,
    preprocess: Callable[[bytes], np.ndarray] | None = None,
    digits: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str, int], None] | None = None,
    detector: Any = None,
) -> dict[str, Any]:
    """Score models on drawn digits the way the API sees them: PNG bytes -> `preprocess` -> model.

    `predict_fns`: model name -> `predict_proba((n, 784) float32) -> (n, 10)`. `preprocess`
    defaults to `digitlab.preprocess.to_mnist`; an image it refuses (EmptyImageError, ...) counts as
    a wrong answer (and, for a scribble, as an unsure one). `scribble_count` non-digit drawings
    measure how unsure the models are where they should be. `progress(stage, n)` is called as work
    is done (stages "render", "preprocess"). Returns a JSON-ready dict (see docs/drawn.md).
    """
    import time

    if preprocess is None:
        from digitlab.preprocess import to_mnist as preprocess

    def tick(stage):
        return (lambda n: progress(stage, n)) if progress is not None else None

    t0 = time.perf_counter()
    pngs, labels, meta = drawn_dataset(count, seed, source, as_png=True, digits=digits, progress=tick("render"))
    s_pngs, s_meta = scribbles(scribble_count, seed, as_png=True, progress=tick("render"))
    t1 = time.perf_counter()
    X, ok = _preprocess_all(pngs, preprocess, tick("preprocess"))
    SX, s_ok = _preprocess_all(s_pngs, preprocess, tick("preprocess"))
    t2 = time.perf_counter()
    n_render = count + scribble_count
    result: dict[str, Any] = {
        "count": count,
        "seed": seed,
        "source": source,
        "scribble_count": scribble_count,
        "preprocess_refused": int((~ok).sum()),
        "scribbles_refused": int((~s_ok).sum()),
        "seconds": {"render": round(t1 - t0, 2), "preprocess": round(t2 - t1, 2)},
        "drawings_per_second": round(n_render / (t1 - t0), 1) if n_render and t1 > t0 else None,
        "models": {},
    }
    schemes = [m["scheme"] for m in meta]
    sources = [m["source"] for m in meta]
    widths = [_width_bucket(m["width"]) for m in meta]
    heights = [_height_bucket(m["height_frac"]) for m in meta]
    digits_k = [str(int(v)) for v in labels]
    styles = [m.get("style", "") for m in meta]
    style_idx = [i for i, s in enumerate(styles) if s]
    for name, fn in predict_fns.items():
        t = time.perf_counter()
        proba = _predict(fn, X)
        pred = np.where(ok, proba.argmax(axis=1) if count else np.zeros(0, dtype=int), -1)
        conf = np.where(ok, proba.max(axis=1) if count else np.zeros(0), 0.0)
        correct = pred == labels
        entry: dict[str, Any] = {
            "accuracy": round(float(correct.mean()), 4) if count else None,
            "n": count,
            "by_scheme": _accuracy_by(schemes, correct, SCHEMES),
            "by_source": _accuracy_by(sources, correct, ["mnist-test", "digits", "styles"]),
            "by_width": _accuracy_by(widths, correct, [_width_bucket(hi) for _, hi in WIDTH_BUCKETS]),
            "by_height": _accuracy_by(heights, correct, [_height_bucket(hi) for _, hi in HEIGHT_BUCKETS]),
            "by_digit": _accuracy_by(digits_k, correct, [str(d) for d in range(10)]),
            "by_style": _accuracy_by([styles[i] for i in style_idx], correct[style_idx], list(STYLES)),
            "confusions": _top_confusions(labels, pred),
            "confidence": {
                "digits_mean_max": round(float(conf.mean()), 4) if count else None,
                "digits_below": {str(c): round(float((conf < c).mean()), 4) for c in CONFIDENCE_LEVELS} if count else {},
            },
        }
        if scribble_count:
            s_proba = _predict(fn, SX)
            s_conf = np.where(s_ok, s_proba.max(axis=1), 0.0)
            entry["confidence"]["scribbles_mean_max"] = round(float(s_conf.mean()), 4)
            entry["confidence"]["scribbles_below"] = {
                str(c): round(float((s_conf < c).mean()), 4) for c in CONFIDENCE_LEVELS
            }
            kinds = [m["kind"] for m in s_meta]
            entry["confidence"]["scribbles_below_0.7_by_kind"] = {
                k: round(float((s_conf[[i for i, x in enumerate(kinds) if x == k]] < 0.7).mean()), 4)
                for k in SCRIBBLE_KINDS
                if k in kinds
            }
        entry["seconds"] = round(time.perf_counter() - t, 2)
        result["models"][name] = entry
    if detector is not None and scribble_count and count:
        # the API's `uncertain` rule (digitlab.detector): flagged scribbles and flagged correct answers
        from digitlab.evaluation.flags import uncertainty_rates

        rates = uncertainty_rates(detector, predict_fns, X, labels, SX, ok=ok, scribbles_ok=s_ok)
        for name in predict_fns:
            result["models"][name]["uncertain"] = rates[name]
    return result


def _top_confusions(labels: np.ndarray, pred: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
    pairs: dict[tuple[int, int], int] = {}
    for t, p in zip(labels.tolist(), pred.tolist()):
        if t != p:
            pairs[(t, p)] = pairs.get((t, p), 0) + 1
    top = sorted(pairs.items(), key=lambda kv: -kv[1])[:k]
    return [{"true": t, "predicted": p if p >= 0 else None, "n": n} for (t, p), n in top]


def evaluate_drawn_command(models: Sequence[str] | None, as_json: bool = False, count: int = 2000, seed: int = 0) -> int:
    """`digitlab evaluate --drawn`: per-model accuracy on drawn digits (and unsureness on scribbles)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from digitlab.core.config import get_settings
    from digitlab.errors import DigitlabError
    from digitlab.models import ModelRegistry

    if count <= 0:
        raise DigitlabError(f"--count must be at least 1, not {count}.", code="invalid_argument")
    settings = get_settings()
    registry = ModelRegistry(settings.model_dir).load_all()
    status = registry.status()
    names = list(models) if models else registry.ready_names()
    if not names:
        raise DigitlabError(
            f"no trained model in {settings.model_dir}: run `digitlab train` first.", code="no_models"
        )
    for name in names:
        if name not in status:
            raise DigitlabError(f"unknown model {name!r}: choose from {', '.join(status)}.", code="unknown_model")
        if status[name] != "ready":
            why = registry.errors().get(name) or f"it is {status[name]}: run `digitlab train {name}`."
            raise DigitlabError(f"model {name!r} is not available: {why}", code="model_not_ready")
    fns = {name: registry.get(name).predict_proba for name in names}
    scribble_count = max(count // 4, 1)
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as bar:
        tasks = {
            "render": bar.add_task("drawing digits and scribbles", total=count + scribble_count),
            "preprocess": bar.add_task("preprocessing (API path)", total=count + scribble_count),
        }
        try:
            from digitlab.detector.runtime import load_detector

            detector = load_detector(settings.model_dir)
        except DigitlabError as exc:
            err.print(f"not-a-digit detector not loaded ({exc}); uncertainty rates left out")
            detector = None
        result = evaluate_drawn(
            fns, count, seed, scribble_count=scribble_count, detector=detector,
            progress=lambda stage, n: bar.advance(tasks[stage], n),
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_tables(result, Console())
    return 0


def _pct(entry: dict | None) -> str:
    if not entry or entry.get("accuracy") is None:
        return "-"
    return f"{100 * entry['accuracy']:.1f}%"


def _print_tables(result: dict[str, Any], console) -> None:
    from rich.table import Table

    models = list(result["models"])
    first = result["models"][models[0]]
    table = Table(
        title=f"Drawn-digit accuracy: {result['count']} canvas-style drawings, seed {result['seed']}",
        caption="PNG bytes -> preprocess.to_mnist -> model (the API's path)",
    )
    table.add_column("group")
    table.add_column("n", justify="right")
    for m in models:
        table.add_column(m, justify="right")
    table.add_row("overall", str(first["n"]), *[_pct(result["models"][m]) for m in models], style="bold")
    for title, key in (("scheme", "by_scheme"), ("source", "by_source"), ("pen width", "by_width"),
                       ("ink height", "by_height"), ("digit", "by_digit"), ("style", "by_style")):
        groups = first[key]
        for i, (group, info) in enumerate(groups.items()):
            table.add_row(
                f"{title}: {group}" if i == 0 else f"  {group}", str(info["n"]),
                *[_pct(result["models"][m][key].get(group)) for m in models],
                end_section=i == len(groups) - 1,
            )
    console.print(table)
    conf = Table(title="How unsure: share of answers whose top probability is below a level")
    conf.add_column("answers")
    for m in models:
        conf.add_column(m, justify="right")
    kinds = ["digits"] + (["scribbles"] if result["scribble_count"] else [])
    for kind in kinds:
        n = result["count"] if kind == "digits" else result["scribble_count"]
        for i, c in enumerate(CONFIDENCE_LEVELS):
            cells = [f"{100 * result['models'][m]['confidence'][kind + '_below'][str(c)]:.1f}%" for m in models]
            conf.add_row(f"{kind} ({n}), top p < {c}", *cells, end_section=i == len(CONFIDENCE_LEVELS) - 1)
    console.print(conf)
    if all("uncertain" in result["models"][m] for m in models):
        unsure = Table(title="The API's `uncertain` flag (docs/uncertainty.md)")
        unsure.add_column("share flagged")
        for m in models:
            unsure.add_column(m, justify="right")
        for label, key in (("scribbles", "scribbles_flagged"), ("correct digit answers", "correct_flagged"),
                           ("wrong digit answers", "wrong_flagged")):
            unsure.add_row(label, *[f"{100 * (result['models'][m]['uncertain'][key] or 0):.1f}%" for m in models])
        console.print(unsure)
    if result["preprocess_refused"] or result["scribbles_refused"]:
        console.print(
            f"preprocessing refused {result['preprocess_refused']} digit drawings (counted wrong) and "
            f"{result['scribbles_refused']} scribbles (counted unsure)."
        )
    console.print(
        f"rendered {result['count'] + result['scribble_count']} drawings in {result['seconds']['render']} s, "
        f"preprocessed in {result['seconds']['preprocess']} s"
    )
