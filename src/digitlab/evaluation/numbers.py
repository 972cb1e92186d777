"""`digitlab evaluate --numbers`: written numbers of 2-6 digits from real handwriting that is not MNIST,
read by `digitlab.segment` with each model; whole-number and per-digit accuracy.

The digits are scans of paper by other writers (`DIGITLAB_HANDWRITING_DIR`, see docs/real.md): the held-out
part of `digitlab evaluate --real` (USPS test, Semeion's last two writer groups), which no model trains
on. (Until session 9 the Semeion half was a random half of all writers, so about half of those digits
were in the CNN's and the classical models' training data.) They are composed into numbers with uneven sizes, baselines and slant, and gaps from
wide to touching and overlapping; half of the numbers are then put on simulated photos of paper (uneven
light, a shadow, lined or squared paper, blue or black ink, sensor noise, JPEG).

`--part calibration` composes the same kind of numbers from digits kept out of both the benchmark and
training (`calibration_digits`): the segmentation's parameters are chosen there, never on the benchmark.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

GAPS = {  # gap between neighbouring digits, in digit heights
    "wide": (0.3, 0.6),
    "normal": (0.1, 0.3),
    "narrow": (0.0, 0.1),
    "touching": (-0.06, 0.0),
    "overlapping": (-0.16, -0.06),
}


@dataclass
class NumberSample:
    image: bytes  # PNG (canvas) or JPEG (photo)
    text: str
    gap: str
    photo: bool
    owner: np.ndarray | None = field(default=None, repr=False)  # per pixel: which digit's ink (-1: none)


def held_out_digits(directory: Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(images uint8 ink-bright, labels, source) of the digits no model trains on: USPS test and
    Semeion's held-out writer groups (the `heldout` part of `digitlab evaluate --real`)."""
    return _part_digits("heldout", directory)


def calibration_digits(directory: Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Digits to choose segmentation parameters on, disjoint from `held_out_digits` and from training:
    the `calibration` part of `digitlab evaluate --real` (the last USPS training scans, Semeion's
    calibration writer group)."""
    return _part_digits("calibration", directory)


def _part_digits(part: str, directory: Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from digitlab.evaluation.real import load_part

    images: list[np.ndarray] = []
    labels, sources = [], []
    for name in ("usps", "semeion"):
        found, found_labels = load_part(name, part, directory)  # checksums verified
        images += list(found)
        labels.append(found_labels)
        sources += [name] * len(found_labels)
    return images, np.concatenate(labels).astype(int), sources


def _glyph(img16: np.ndarray, label: int, source: str, height: int, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 scan -> ink in [0, 1] at `height` px, at a handwriting-like width."""
    ys, xs = np.nonzero(img16 > 40)
    crop = img16[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255.0
    native = crop.shape[1] / crop.shape[0]
    if source == "semeion" or native > 0.9:  # Semeion is stretched to its box: give it a natural width
        native = rng.uniform(0.25, 0.4) if label == 1 else rng.uniform(0.55, 0.85)
    width = max(2, round(height * min(native, 0.95)))
    im = Image.fromarray(crop, "F").resize((width, height), Image.BICUBIC)
    return np.clip(ndi.gaussian_filter(np.asarray(im), 0.6), 0.0, 1.0)


def compose(
    glyphs: list[np.ndarray], gap: tuple[float, float], rng: np.random.Generator, height: int
) -> np.ndarray:
    """Digits side by side (max of ink where they overlap) with baseline jitter; ink in [0, 1]."""
    return compose_owned(glyphs, gap, rng, height)[0]


def compose_owned(
    glyphs: list[np.ndarray], gap: tuple[float, float], rng: np.random.Generator, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """`compose`, and which digit (index into `glyphs`, -1 for none) each pixel's ink comes from: the
    segment verifier learns from that which candidate crops are one whole digit."""
    margin = height // 2
    width = sum(g.shape[1] for g in glyphs) + int(height * max(gap[1], 0) * len(glyphs)) + 2 * margin
    canvas = np.zeros((int(height * 1.7) + 2 * margin, width + 2 * margin), np.float32)
    owner = np.full(canvas.shape, -1, np.int16)
    x = margin
    for k, g in enumerate(glyphs):
        y = margin + int(0.35 * height) + int(rng.uniform(-0.08, 0.08) * height) + (height - g.shape[0])
        region = (slice(y, y + g.shape[0]), slice(x, x + g.shape[1]))
        owner[region][g > canvas[region]] = k
        canvas[region] = np.maximum(canvas[region], g)
        x += g.shape[1] + int(rng.uniform(*gap) * height)
    ys, xs = np.nonzero(canvas > 0.05)
    box = (slice(max(0, ys.min() - margin), ys.max() + margin), slice(max(0, xs.min() - margin), xs.max() + margin))
    return canvas[box], owner[box]


def shear(a: np.ndarray, k: float, *, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Slant by `k` (dx per dy); `order=0, fill=-1` shears an owner map the same way."""
    h, w = a.shape
    pad = int(abs(k) * h) + 2
    out = np.full((h, w + 2 * pad), fill, np.float32)
    out[:, pad : pad + w] = a
    return ndi.affine_transform(out, [[1, 0], [k, 1]], offset=[0, -k * h / 2], order=order, cval=fill)


def canvas_png(ink: np.ndarray) -> bytes:
    rgb = (255 - np.rint(ink * (255 - 35))).astype(np.uint8)
    return _encode(Image.fromarray(rgb, "L").convert("RGB"), "PNG")


def photo_jpeg(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on a simulated phone photo of paper: lit unevenly, a shadow, ruled lines, noise, JPEG."""
    h, w = ink.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paper = np.array(rng.uniform([225, 220, 205], [250, 248, 240]), np.float32)
    light = 1.0 - rng.uniform(0.1, 0.35) * (xx / w if rng.random() < 0.5 else yy / h)
    light *= 1.0 - rng.uniform(0.0, 0.25) * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2
    edge = rng.uniform(0.2, 0.8) * w
    shadow = 1.0 - rng.uniform(0.2, 0.45) / (1.0 + np.exp(-(xx - edge - 0.3 * (yy - h / 2)) / (0.03 * w)))
    if rng.random() < 0.5:
        shadow = shadow[:, ::-1]
    img = paper[None, None, :] * (light * shadow)[..., None]
    line_colour = np.array(rng.choice([[150, 170, 215], [170, 170, 170], [200, 150, 150]]), np.float32)
    spacing = rng.uniform(0.35, 0.6) * h
    kind = rng.choice(["lined", "squared", "plain"], p=[0.45, 0.4, 0.15])
    lines = np.zeros((h, w), np.float32)
    if kind != "plain":
        lines[(np.mod(yy + rng.uniform(0, spacing), spacing) < 1.5)] = rng.uniform(0.4, 0.8)
    if kind == "squared":
        lines[(np.mod(xx + rng.uniform(0, spacing), spacing) < 1.5)] = rng.uniform(0.4, 0.8)
    img = img * (1 - lines[..., None]) + line_colour * (light * shadow)[..., None] * lines[..., None]
    pen = np.array(rng.choice([[25, 30, 45], [20, 40, 140], [10, 10, 10]]), np.float32)
    strength = rng.uniform(0.8, 0.95) * ink[..., None]
    img = img * (1 - strength) + pen * (light * shadow)[..., None] * strength
    img = ndi.gaussian_filter(img, (rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), 0))
    img += rng.normal(0, rng.uniform(2, 6), img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    return _encode(im, "JPEG", quality=int(rng.integers(50, 86)))


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def number_samples(
    count: int, *, seed: int = 0, directory: Path | None = None, part: str = "heldout", owners: bool = False
) -> list[NumberSample]:
    """`count` written numbers (2-6 digits; every gap kind equally often; every other one a photo) of the
    held-out digits, or of the `calibration` ones (to tune the segmentation on), or of the `fit` ones
    (to train the segment verifier on; `owners`: with each pixel's digit). `directory`: the real
    handwriting folder, by default the settings' (`DIGITLAB_HANDWRITING_DIR`)."""
    if directory is None:
        from digitlab.core.config import Settings

        directory = Settings().handwriting_path
    images, labels, sources = _part_digits(part, directory)
    rng = np.random.default_rng(seed)
    gap_names = list(GAPS)
    out = []
    for n in range(count):
        length = int(rng.integers(2, 7))
        picks = rng.integers(0, len(labels), length)
        height = int(rng.integers(40, 90))
        glyphs = [
            _glyph(images[i], int(labels[i]), sources[i], max(12, int(height * rng.uniform(0.8, 1.12))), rng)
            for i in picks
        ]
        gap = gap_names[n % len(gap_names)]
        ink, owner = compose_owned(glyphs, GAPS[gap], rng, height)
        if rng.random() < 0.5:
            k = rng.uniform(-0.25, 0.25)
            ink = shear(ink, k)
            owner = shear(owner, k, order=0, fill=-1) if owners else owner
        photo = (n // len(gap_names)) % 2 == 1
        data = photo_jpeg(ink, rng) if photo else canvas_png(ink)
        text = "".join(str(int(labels[i])) for i in picks)
        out.append(NumberSample(data, text, gap, photo, owner.astype(np.int8) if owners else None))
    return out


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def score(samples: list[NumberSample], texts: list[str | None]) -> dict:
    """Whole-number and per-digit accuracy (digits read right = true length - edit distance), by slice."""

    def block(idx: list[int]) -> dict:
        if not idx:
            return {"numbers": 0}
        whole = sum(texts[i] == samples[i].text for i in idx)
        total = sum(len(samples[i].text) for i in idx)
        right = sum(
            max(0, len(samples[i].text) - _edit_distance(texts[i] or "", samples[i].text)) for i in idx
        )
        return {
            "numbers": len(idx),
            "number_accuracy": round(whole / len(idx), 4),
            "digit_accuracy": round(right / total, 4),
        }

    all_idx = list(range(len(samples)))
    out = {"all": block(all_idx)}
    out["canvas"] = block([i for i in all_idx if not samples[i].photo])
    out["photo"] = block([i for i in all_idx if samples[i].photo])
    for gap in GAPS:
        out[gap] = block([i for i in all_idx if samples[i].gap == gap])
    return out


def evaluate_numbers(
    names: list[str], model_dir: Path, *, count: int, seed: int = 0, part: str = "heldout"
) -> list[dict]:
    """Read every sample with each model; one row of scores per model."""
    from digitlab.detector.runtime import load_detector
    from digitlab.errors import DigitlabError
    from digitlab.line_reader import load_line_reader
    from digitlab.models.registry import load_model
    from digitlab.segment import read_number
    from digitlab.segment_verifier import load_segment_verifier

    samples = number_samples(count, seed=seed, part=part)
    detector, verifier, line_reader = load_detector(model_dir), load_segment_verifier(model_dir), load_line_reader(model_dir)
    rows = []
    for name in names:
        model = load_model(name, model_dir)
        texts: list[str | None] = []
        started = time.perf_counter()
        for sample in samples:
            try:
                texts.append(read_number(sample.image, model, detector, verifier=verifier, line_reader=line_reader).text)
            except DigitlabError:
                texts.append(None)
        seconds = time.perf_counter() - started
        rows.append(
            {"model": name, "ms_per_number": round(1000 * seconds / len(samples), 1), **score(samples, texts)}
        )
    return rows


def evaluate_numbers_command(
    names: list[str], *, as_json: bool, count: int, seed: int, part: str = "heldout"
) -> int:
    from digitlab.core.config import Settings
    from digitlab.models.registry import MODEL_SPECS, manifest_path

    model_dir = Settings().model_dir
    names = names or [n for n in MODEL_SPECS if manifest_path(n, model_dir) is not None]
    rows = evaluate_numbers(names, model_dir, count=count, seed=seed, part=part)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    slices = ["all", "canvas", "photo", *GAPS]
    source = "USPS test + held-out Semeion" if part == "heldout" else "the calibration digits (USPS, Semeion)"
    print(f"{count} written numbers (2-6 digits) from {source}; numbers / digits read right")
    print(f"{'model':<14}" + "".join(f"{s:>17}" for s in slices) + f"{'ms/number':>11}")
    for row in rows:
        cells = "".join(_cell(row[s]) for s in slices)
        print(f"{row['model']:<14}{cells}{row['ms_per_number']:>11}")
    return 0


def _cell(block: dict) -> str:
    """One slice's "numbers / digits %", or a dash for a slice with no numbers (with --count under 5 some
    gap kinds have none: that was a KeyError and a traceback)."""
    if not block.get("numbers"):
        return f"{'–':>17}"
    return f"{100 * block['number_accuracy']:>8.1f} /{100 * block['digit_accuracy']:>6.1f} %"
