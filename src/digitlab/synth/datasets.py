"""Seeded sets of drawings: re-drawn MNIST test digits and style templates (`drawn_dataset`), and
scribbles that are not digits (`scribbles`), plus a contact sheet to look at them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from digitlab.synth.glyphs import LETTERS, STYLES, SYMBOLS, style_digit
from digitlab.synth.render import CANVAS, render_with_meta, to_png
from digitlab.synth.shapes import build_stroke, catmull_rom, polyline
from digitlab.synth.trace import skeletonize, stroke_fidelity, strokes_from_mnist

SOURCES = ("mnist-test", "styles", "mixed")
STYLE_SHARE = 0.2  #: share of style-template digits in the "mixed" source
MIN_FIDELITY = 0.85  #: traced MNIST digits below this (a lost loop or stroke) are skipped
MAX_PEN_RATIO = 0.23  #: scans whose pen is wider than this share of the digit are skipped (~3 %)


def scan_pen_ratio(img28: np.ndarray) -> float:
    """Pen width of a scanned digit relative to its size (MNIST median ~0.14).

    Very thick scans (> MAX_PEN_RATIO, the top ~3 %) are blobs whose skeleton is unreliable: loops
    and arms melt into the ink, so their traces are left out of the evaluation set.
    """
    a = np.asarray(img28, dtype=np.float64).reshape(28, 28)
    if a.max(initial=0) <= 0:
        return 0.0
    inked = a > 0.4 * a.max()
    skel = skeletonize(inked)
    if not skel.any():
        return 0.0
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return 2.0 * float(ndimage.distance_transform_edt(inked)[skel].mean()) / extent


def _mnist_test_digits(directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official 10k MNIST test images (uint8 (N, 28, 28)) and labels, via `digitlab.data`."""
    from digitlab.data import load_mnist

    images, labels = load_mnist("test", directory=directory)
    return images, labels


def _item_rng(seed: int, index: int, salt: int) -> np.random.Generator:
    """Each drawing has its own generator: drawing i is the same whatever `count` is."""
    return np.random.default_rng([salt, int(seed), int(index)])


def drawn_dataset(
    count: int,
    seed: int = 0,
    source: str = "mixed",
    *,
    as_png: bool = False,
    size: int = CANVAS,
    digits: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    **render_kwargs,
) -> tuple[list, np.ndarray, list[dict[str, Any]]]:
    """`count` digits drawn like on the canvas: (images, labels, meta); the same for the same seed.

    `source`: "mnist-test" (MNIST *test* digits traced into strokes; no model trains on them),
    "styles" (the parametric `STYLES`, rare styles as often as ordinary ones) or "mixed"
    (STYLE_SHARE of styles, the rest MNIST test digits). MNIST test digits are taken in a seeded
    random order without repeats (up to 10,000); very thick scans (`scan_pen_ratio` >
    MAX_PEN_RATIO) and unfaithful traces (`stroke_fidelity` < MIN_FIDELITY) are skipped (~4 %). `digits=(images, labels)` replaces the MNIST
    test set (tests, or training digits for augmentation). Images are RGBA arrays
    `(size, size, 4)`, or PNG bytes with `as_png=True`. `meta[i]` says how image i was made:
    source, MNIST index or style name, scheme, pen and background colours, width, height, rotation.
    `progress(n)` is called after each image.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    if source != "styles" and count:
        images28, labels28 = digits if digits is not None else _mnist_test_digits()
        order = np.random.default_rng([1, int(seed)]).permutation(len(images28))
    next_mnist = 0
    out: list = []
    labels = np.empty(count, dtype=np.int64)
    meta: list[dict[str, Any]] = []
    for i in range(count):
        rng = _item_rng(seed, i, 2)
        use_style = source == "styles" or (source == "mixed" and rng.random() < STYLE_SHARE)
        if use_style:
            digit = int(rng.integers(10))
            names = [n for n, (d, _, _) in STYLES.items() if d == digit]
            style = names[int(rng.integers(len(names)))]
            strokes = style_digit(digit, rng, style=style)
            info: dict[str, Any] = {"source": "styles", "style": style}
        else:
            while True:
                if next_mnist >= len(order):  # more drawings than digits: go round again
                    order = np.concatenate([order, np.random.default_rng([1, int(seed), next_mnist]).permutation(len(images28))])
                k = int(order[next_mnist])
                next_mnist += 1
                if scan_pen_ratio(images28[k]) > MAX_PEN_RATIO:
                    continue
                strokes = strokes_from_mnist(images28[k])
                if strokes and stroke_fidelity(strokes, images28[k]) >= MIN_FIDELITY:
                    break
            digit = int(labels28[k])
            info = {"source": "mnist-test" if digits is None else "digits", "index": k}
        img, m = render_with_meta(strokes, rng, size=size, **render_kwargs)
        info.update(m)
        info["label"] = digit
        out.append(to_png(img) if as_png else img)
        labels[i] = digit
        meta.append(info)
        if progress is not None:
            progress(1)
    return out, labels, meta


SCRIBBLE_KINDS = ("curves", "zigzag", "letter", "two-digits", "blob", "dots")
SCRIBBLE_WEIGHTS = np.array([0.28, 0.12, 0.25, 0.15, 0.1, 0.1])


def _random_curve(rng, n_pts: int, box=(1.0, 1.0)) -> np.ndarray:
    pts = rng.random((n_pts, 2)) * box
    return catmull_rom(pts)




#: what a "letter" scribble draws: a few letters that look like no digit, and symbols
SCRIBBLE_GLYPHS = {**{k: LETTERS[k] for k in "AHKMNWXERYL"}, **SYMBOLS}


def _letter(rng) -> tuple[str, list]:
    name = list(SCRIBBLE_GLYPHS)[int(rng.integers(len(SCRIBBLE_GLYPHS)))]
    return name, [build_stroke(pieces, rng, 0.02) for pieces in SCRIBBLE_GLYPHS[name](rng)]


def scribble(kind: str, rng: np.random.Generator) -> tuple[list, dict[str, Any]]:
    info: dict[str, Any] = {"kind": kind}
    if kind == "curves":
        n = int(rng.integers(1, 5))
        strokes = [_random_curve(rng, int(rng.integers(3, 8)), (rng.uniform(0.5, 1.5), 1.0)) for _ in range(n)]
    elif kind == "zigzag":
        teeth = int(rng.integers(3, 9))
        x = np.linspace(0, rng.uniform(0.6, 1.6), 2 * teeth + 1)
        y = np.where(np.arange(len(x)) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.08, len(x))
        strokes = [polyline(np.stack([x, y], axis=1))]
        if rng.random() < 0.5:  # a vertical zig-zag
            strokes = [s[:, ::-1] for s in strokes]
    elif kind == "letter":
        name, strokes = _letter(rng)
        info["letter"] = name
    elif kind == "two-digits":
        a, b = int(rng.integers(10)), int(rng.integers(10))
        left, right = style_digit(a, rng), style_digit(b, rng)
        shift = max(s[:, 0].max() for s in left) + rng.uniform(0.1, 0.35) - min(s[:, 0].min() for s in right)
        strokes = left + [s + (shift, rng.uniform(-0.1, 0.1)) for s in right]
        info["digits"] = f"{a}{b}"
    elif kind == "blob":  # a filled-in shape: the pen going back and forth over an area
        n = int(rng.integers(6, 16))
        t = np.linspace(0, 1, n)
        rx, ry = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)
        ys = 0.5 + (t - 0.5) * 2 * ry
        half = rx * np.sqrt(np.clip(1 - ((ys - 0.5) / ry) ** 2, 0.05, 1))
        xs = 0.5 + np.where(np.arange(n) % 2 == 0, -half, half)
        pts = np.stack([xs, ys], axis=1) + rng.normal(0, 0.03, (n, 2))
        strokes = [catmull_rom(pts)]
        info["passes"] = n
    elif kind == "dots":
        n = int(rng.integers(3, 9))
        strokes = []
        for p in rng.random((n, 2)):
            if rng.random() < 0.6:
                strokes.append(p[None, :])
            else:
                strokes.append(polyline(np.array([p, p + rng.normal(0, 0.06, 2)])))
        info["dots"] = n
    else:
        raise ValueError(f"unknown scribble kind {kind!r}; choose from {', '.join(SCRIBBLE_KINDS)}")
    return strokes, info


def scribbles(
    count: int,
    seed: int = 0,
    *,
    kinds: Sequence[str] | None = None,
    as_png: bool = False,
    size: int = CANVAS,
    progress: Callable[[int], None] | None = None,
    **render_kwargs,
) -> tuple[list, list[dict[str, Any]]]:
    """`count` drawings that are not one digit, rendered with the same pen: (images, meta).

    Kinds: random smooth curves (1-4 strokes), zig-zags, letters and symbols (A, H, K, M, #, *,
    heart, spiral, smiley, ...), two digits side by side, filled blobs, scattered dots. A model
    should be unsure about these; `meta[i]["kind"]` says which is which.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    kinds = tuple(kinds) if kinds else SCRIBBLE_KINDS
    weights = np.array([SCRIBBLE_WEIGHTS[SCRIBBLE_KINDS.index(k)] for k in kinds])
    weights = weights / weights.sum()
    out, meta = [], []
    for i in range(count):
        rng = _item_rng(seed, i, 3)
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        strokes, info = scribble(kind, rng)
        img, m = render_with_meta(strokes, rng, size=size, **render_kwargs)
        info.update(m)
        out.append(to_png(img) if as_png else img)
        meta.append(info)
        if progress is not None:
            progress(1)
    return out, meta




def _checkerboard(size: int, cell: int = 8) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 205, 180).astype(np.uint8)
    return Image.fromarray(board, "L").convert("RGBA")


def save_contact_sheet(
    path: str | Path,
    images: Sequence,
    labels: Sequence | None = None,
    *,
    cols: int = 8,
    cell: int = 70,
    gap: int = 4,
) -> Path:
    """Save a grid of drawings (RGBA arrays or PNG bytes), each downscaled to `cell` px.

    Transparent pixels show as a grey checkerboard; `labels` (digits or short strings) are printed
    in each cell's corner. Returns the path.
    """
    from PIL import ImageFont

    path = Path(path)
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    sheet = Image.new("RGB", (cols * (cell + gap) + gap, rows * (cell + gap) + gap), (90, 90, 90))
    board = _checkerboard(cell, max(4, cell // 9))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        pic = Image.open(io.BytesIO(im)) if isinstance(im, (bytes, bytearray)) else Image.fromarray(np.asarray(im))
        pic = pic.convert("RGBA").resize((cell, cell), Image.LANCZOS)
        tile = board.copy()
        tile.alpha_composite(pic)
        x, y = gap + (i % cols) * (cell + gap), gap + (i // cols) * (cell + gap)
        sheet.paste(tile.convert("RGB"), (x, y))
        if labels is not None:
            text = str(labels[i])
            box = draw.textbbox((x + 2, y + 1), text, font=font)
            draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(255, 236, 140))
            draw.text((x + 2, y + 1), text, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    if path.stat().st_size > 300_000:  # keep docs light: a 256-colour palette is plenty here
        sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path
