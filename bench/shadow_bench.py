"""`/predict`'s preprocessing of PNG photos with a shadow over part of the sheet, with and without
`preprocess.shows_a_scene` (without it, a PNG that is not an upload is read by the colour distance alone, as
before session 42).

    python bench/shadow_bench.py                     # held-out USPS and Semeion digits, 150 a set, seed 1
    python bench/shadow_bench.py --part calibration --seed 0

Each real digit (16 x 16 scan, not MNIST's writers) is written large in blue ink on a 640 x 480 sheet, lit a
little unevenly, then a third get no shadow, a third a hard-edged and a third a soft-edged shadow (20-50 %
darker) coming in from a random side and stopping short of the digit; blurred, noise added, saved as PNG,
read by the bundled CNN. Prints one table: right answers (and sure-and-wrong, top probability >= 0.9) per kind.
"""

from __future__ import annotations

import argparse
import io
import os
from types import SimpleNamespace
from unittest import mock

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import zoom

from digitlab.api import prediction
from digitlab.errors import DigitlabError
from digitlab.evaluation.real import load_part
from digitlab.models.registry import BUNDLED_DIR, load_model

KINDS = ("none", "hard", "soft")


def shadowed_photo(img16: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """(kind, PNG bytes) of one scan written on a photographed sheet."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    sheet = 244.0 * (1 - 0.08 * (xx / w * 0.6 + yy / h * 0.4))
    size = int(rng.integers(120, 260))
    ink = np.clip(zoom(img16.astype(np.float32) / 255, size / 16, order=1) * 1.6 - 0.3, 0, 1)
    oy, ox = int(rng.integers(40, h - size - 40)), int(rng.integers(100, w - size - 100))
    cover = np.zeros((h, w), np.float32)
    cover[oy : oy + size, ox : ox + size] = ink
    rgb = sheet[..., None] * (1 - cover[..., None]) + np.array([35, 40, 110]) * cover[..., None]
    kind = KINDS[int(rng.integers(3))]
    dark = rng.uniform(0.2, 0.5)
    if kind != "none":
        side, slope = int(rng.integers(4)), rng.uniform(-0.3, 0.3)
        depth, along = [xx, w - xx, yy, h - yy][side], [yy, yy, xx, xx][side]
        room = [ox, w - ox - size, oy, h - oy - size][side] * rng.uniform(0.3, 0.8)  # stops short of the digit
        pos = depth - (room + slope * (along - along.mean()))
        shade = (pos < 0).astype(np.float32) if kind == "hard" else 1 / (1 + np.exp(pos / 12.0))
        rgb = rgb * (1 - dark * shade)[..., None]
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(im).astype(np.float32) + rng.normal(0, 2.5, (h, w, 1))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return kind, out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="heldout", choices=("heldout", "calibration"))
    ap.add_argument("--per-set", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--handwriting", default=os.environ.get("DIGITLAB_HANDWRITING_DIR", "../shared/handwriting"))
    args = ap.parse_args()

    cnn = load_model("cnn", BUNDLED_DIR)
    ctx = SimpleNamespace(settings=SimpleNamespace(max_image_pixels=50_000_000))
    rng = np.random.default_rng(args.seed)
    tally = {kind: {"n": 0, "without": 0, "with": 0, "sure_wrong_without": 0, "sure_wrong_with": 0} for kind in KINDS}
    for name in ("usps", "semeion"):
        images, labels = load_part(name, args.part, args.handwriting)
        for i in rng.choice(len(labels), min(args.per_set, len(labels)), replace=False):
            kind, data = shadowed_photo(images[i], rng)
            row = tally[kind]
            row["n"] += 1
            for way in ("without", "with"):
                with mock.patch.object(prediction, "shows_a_scene", (lambda _: False) if way == "without" else prediction.shows_a_scene):
                    try:
                        image, _ = prediction.preprocess(ctx, data, pen_color=None, background_color=None)
                    except DigitlabError:
                        continue  # refused: not right
                p = cnn.predict_proba(image.reshape(1, 784))[0]
                row[way] += int(p.argmax() == labels[i])
                row[f"sure_wrong_{way}"] += int(p.argmax() != labels[i] and p.max() >= 0.9)
    print(f"{'shadow':8s} {'n':>4s} {'right without':>14s} {'right with':>11s} {'sure&wrong without':>19s} {'with':>5s}")
    for kind, row in tally.items():
        print(f"{kind:8s} {row['n']:4d} {row['without']:14d} {row['with']:11d} {row['sure_wrong_without']:19d} "
              f"{row['sure_wrong_with']:5d}")


if __name__ == "__main__":
    main()
