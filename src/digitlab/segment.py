"""A written number -> its digits, left to right: segmentation scored by the model itself.

Why this shape: geometry alone cannot split handwriting (gaps between digits can be narrower than gaps
inside a 4; digits touch; a 5's top floats apart), and the model alone cannot see a row of digits. So
geometry only proposes and the model decides:

1. Ink: the image's ink map (`preprocess.ink_map`; photos of paper are first flattened against their
   own, unevenly lit, background and long ruled lines are removed).
2. Slant: one shear for the whole number from the ink's second moments; columns are read in sheared
   coordinates, so a cut between slanted digits is slanted too.
3. Pieces: connected strokes. Strokes much smaller than the writing (a dot, a comma) are *marks*: they may
   join a digit (the top of a 5) or be dropped, never read as a digit on their own. Strokes wider than a
   digit get candidate cuts at thin columns of their projection (where touching digits meet).
4. Readings: every run of neighbouring pieces that could be one digit (not too wide; separate strokes only
   when they overlap horizontally) is cropped, preprocessed like a single drawing (`to_mnist`) and scored by
   the model and the not-a-digit detector, all in one batch. Dynamic programming picks the reading whose
   digits are the most probable (cuts through ink and over-wide digits cost a little).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.decode import EmptyImageError, open_image, pil_to_rgba
from digitlab.detector.runtime import NotDigit
from digitlab.preprocess import ink_map, to_mnist

#: working resolution: long side of the image the segmentation looks at (an 840 px canvas is halved)
WORK_MAX = 800
INK_ON = 0.35  # ink strength that counts as a stroke pixel
MARK_HEIGHT = 0.35  # a stroke lower than this fraction of the writing height (and as narrow) is a mark
SPECK_AREA = 0.02  # strokes with less ink than this fraction of the biggest stroke are noise
MAX_DIGIT_WIDTH = 1.25  # no digit is wider than this many writing heights
WIDE_PRIOR = 0.85  # digits wider than this (in writing heights) pay WIDE_COST per extra height
WIDE_COST = 4.0
CUT_COST = math.log(2.0)  # cutting through ink is a guess: it must buy a clearly better reading
MIN_OVERLAP = 0.3  # separate strokes form one digit only if they overlap this much horizontally
MAX_PIECES = 5  # pieces per digit
MAX_CUTS = 6  # candidate cuts per stroke
CUT_MIN_WIDTH = 0.55  # strokes narrower than this (in writing heights) are never cut
SPLIT_WIDTH = 1.0  # a stroke wider than this (in writing heights) is cut near where digits would meet
MAX_SPLIT = 4  # ...into at most this many
CUT_MARGIN = 0.15  # no cut closer than this (in writing heights) to a stroke's end
CUT_SPACING = 0.25  # ...or to another cut
DIGIT_BONUS = 0.0  # added per digit read: evens out the sum of log-probabilities' preference for fewer digits
DETECTOR_WEIGHT = 0.5  # weight of log p(digit) from the not-a-digit detector in a digit's score
#: leave out of the text what the detector is sure is no digit (a $) when the model's top probability is below
#: this; 0 = never (the digit is answered `uncertain` instead). Measured on the numbers benchmark: 0.9
#: costs 2 points of whole numbers, "always" 8 (real USPS / Semeion digits look odd to the detector).
DROP_BELOW = 0.0
UNCERTAIN_BELOW = 0.5  # without the detector, digits below this confidence are uncertain
#: a segment of a number is also `uncertain` when the detector's p(not a digit) passes this: inside a number
#: marks ($, %, a letter) are common, so segments get a stricter test than a whole drawing (whose threshold,
#: chosen on real handwriting, is higher). 0.85 since the detector learnt real handwriting: it flags 1.4 % of
#: the USPS and 4.4 % of the Semeion calibration digits (the earlier detector at 0.95: 2.6 and 18 %)
MARK_NOT_DIGIT = 0.85


class ProbabilityModel(Protocol):
    name: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass
class ReadDigit:
    digit: int
    confidence: float
    probabilities: list[float]
    box: tuple[int, int, int, int]  # x, y, w, h in the input image's pixels
    uncertain: bool
    image28: np.ndarray = field(repr=False)


@dataclass
class NumberReading:
    text: str
    digits: list[ReadDigit]
    confidence: float  # product of the digits' confidences
    uncertain: bool  # some digit is uncertain
    dropped: list[tuple[int, int, int, int]]  # boxes of marks left out of the text (dots, commas, ...)


# --------------------------------------------------------------------------------------------------
# ink


def load_rgba(image: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes (decode checks apply, EXIF orientation too), a PIL image or an array -> RGBA uint8."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return pil_to_rgba(open_image(bytes(image), max_pixels))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    return pil_to_rgba(image)


def is_photo(rgba: np.ndarray) -> bool:
    """A canvas has one exact background colour at its border; a photo or scan does not."""
    border = np.concatenate([rgba[0], rgba[-1], rgba[:, 0], rgba[:, -1]]).astype(np.int16)
    if np.median(border[:, 3]) < 128:
        return False
    return float(np.mean(np.abs(border[:, :3] - np.median(border[:, :3], axis=0)).max(axis=1) > 3)) > 0.2


def flatten_photo(rgba: np.ndarray) -> np.ndarray:
    """Dark ink on unevenly lit paper -> ink strength in [0, 1]; ruled lines are removed.

    The paper's brightness is estimated per place (a max filter wider than any stroke, smoothed), the
    picture divided by it: shadows and light gradients cancel. Long thin horizontal or vertical lines
    (lined or squared paper) are found with a long opening and taken out.
    """
    lum = rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = lum.shape
    k = max(3, round(min(h, w) / 3))  # wider than any stroke: the max filter sees paper everywhere
    paper = ndi.maximum_filter(ndi.uniform_filter(lum, 3), size=k)
    paper = ndi.uniform_filter(paper, size=k)
    darkness = np.clip(1.0 - lum / np.maximum(paper, 1.0), 0.0, 1.0)
    for size in ((1, max(15, int(0.5 * w))), (max(15, int(0.8 * h)), 1)):  # longer than any digit's stroke
        darkness = np.clip(darkness - ndi.grey_opening(darkness, size=size), 0.0, None)
    noise = float(np.percentile(darkness, 60))
    core = (
        float(np.percentile(darkness[darkness > noise + 0.05], 90))
        if (darkness > noise + 0.05).sum() > 8
        else 0.0
    )
    if core < 0.12:
        raise EmptyImageError("Nothing written: the photo shows no ink. Write a number and try again.")
    floor = max(noise + 0.04, 0.3 * core)
    return np.clip((darkness - floor) / max(core - floor, 1e-3), 0.0, 1.0).astype(np.float32)


def working_ink(
    image: Any, *, pen_color=None, background_color=None, max_pixels=None
) -> tuple[np.ndarray, float]:
    """(ink map at working resolution, input pixels per working pixel)."""
    rgba = load_rgba(image, max_pixels=max_pixels)
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise EmptyImageError("The image has no pixels.")
    factor = max(1, math.ceil(max(rgba.shape[:2]) / WORK_MAX))
    if factor > 1:
        rgba = np.asarray(Image.fromarray(np.ascontiguousarray(rgba), "RGBA").reduce(factor))
    if is_photo(rgba) and pen_color is None:
        return flatten_photo(rgba), float(factor)
    return ink_map(rgba, pen_color=pen_color, background_color=background_color), float(factor)


# --------------------------------------------------------------------------------------------------
# pieces


@dataclass
class Piece:
    """A set of stroke pixels that belong together: a whole stroke, or a slice of one between two cuts."""

    ys: np.ndarray
    xs: np.ndarray
    left: float  # extent in sheared coordinates
    right: float
    component: int
    cut_left: bool = False  # its left edge is a cut through ink
    mark: bool = False

    @property
    def centre(self) -> float:
        return 0.5 * (self.left + self.right)


def _slant(ys: np.ndarray, xs: np.ndarray) -> float:
    """dx/dy of the writing's main axis (second moments of the stroke pixels), clipped to a sane range."""
    if len(ys) < 10:
        return 0.0
    yc = ys - ys.mean()
    var = float(np.sum(yc * yc))  # (elementwise: a BLAS dot spins up threads for a few thousand pixels)
    return float(np.clip(np.sum(yc * (xs - xs.mean())) / var, -0.7, 0.7)) if var > 0 else 0.0


def _weighted_median(pairs: list[tuple[float, int]]) -> float:
    if not pairs:
        return 0.0
    pairs = sorted(pairs)
    half = 0.5 * sum(w for _, w in pairs)
    acc = 0
    for value, w in pairs:
        acc += w
        if acc >= half:
            return value
    return pairs[-1][0]


def _runs(ys: np.ndarray) -> int:
    """How many separate vertical runs of ink the rows `ys` of one column form."""
    if len(ys) == 0:
        return 0
    u = np.unique(ys)
    return 1 + int(np.count_nonzero(np.diff(u) > 1))


def _cuts(
    xp: np.ndarray, ys: np.ndarray, left: float, right: float, height: float, stroke: float
) -> list[float]:
    """Candidate cut positions (sheared x) inside one wide stroke: thin columns of its projection.

    A cut must cross one stroke (where two digits touch), or two when the stroke is wider than a digit
    (digits that overlap); a 0 is never cut down its middle unless it is too wide for one digit.
    """
    width = right - left
    if width < CUT_MIN_WIDTH * height:
        return []
    max_runs = 2 if width > 1.0 * height else 1
    lo = math.floor(left)
    bins = np.floor(xp - lo).astype(np.int64)
    counts = np.bincount(bins)
    smooth = ndi.uniform_filter1d(counts.astype(np.float32), 3)
    margin = max(2, int(CUT_MARGIN * height))
    window = max(2, int(0.3 * height))
    padded = np.concatenate([np.full(window, -np.inf), smooth, np.full(window, -np.inf)])
    maxima = np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1)
    idx = np.arange(len(smooth))
    left, right = maxima[idx], maxima[np.minimum(idx + 1 + window, len(maxima) - 1)]  # the two shoulders
    prev, nxt = np.roll(smooth, 1), np.roll(smooth, -1)
    ok = (
        (smooth <= prev)
        & (smooth <= nxt)
        & (smooth <= 3.0 * stroke)
        & (smooth <= 0.6 * np.minimum(left, right))
    )
    ok[:margin] = False
    ok[len(smooth) - margin :] = False
    found = [(float(smooth[i]), int(i)) for i in np.flatnonzero(ok) if _runs(ys[bins == i]) <= max_runs]
    found.sort()
    if width > SPLIT_WIDTH * height:  # too wide for one digit: also cut near where k digits would meet
        for k in range(2, min(MAX_SPLIT, round(width / (0.45 * height))) + 1):
            for m in range(1, k):
                centre = int(m * width / k)
                a, b = (
                    max(margin, centre - int(0.12 * height)),
                    min(len(smooth) - margin, centre + int(0.12 * height) + 1),
                )
                if a < b:
                    i = a + int(np.argmin(smooth[a:b]))
                    found.append((float("inf"), i))  # after every thin column
    chosen: list[int] = []
    for _, i in found:
        if all(abs(i - j) >= max(2, CUT_SPACING * height) for j in chosen):
            chosen.append(i)
        if len(chosen) >= MAX_CUTS:
            break
    return sorted(lo + i + 0.5 for i in chosen)


def pieces_of(s: np.ndarray) -> tuple[list[Piece], float, list[Piece]]:
    """Stroke pieces in reading order, the writing height, and the noise specks that were dropped."""
    mask = s >= INK_ON
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        raise EmptyImageError("Nothing written: the image is blank. Write a number and try again.")
    mass = np.bincount(labels.ravel(), weights=s.ravel(), minlength=n + 1)[1:]
    boxes = ndi.find_objects(labels)
    keep = [i for i in range(n) if mass[i] >= SPECK_AREA * mass.max()]
    heights = np.array([boxes[i][0].stop - boxes[i][0].start for i in keep], float)
    height = float(np.median(heights[heights >= 0.5 * heights.max()]))
    tall = {i for i, h in zip(keep, heights, strict=True) if h >= 0.5 * heights.max()}
    coords = []
    for i in range(n):  # every stroke's pixels, once
        sl = boxes[i]
        ys, xs = np.nonzero(labels[sl] == i + 1)
        coords.append((ys + sl[0].start, xs + sl[1].start))
    slants = [(_slant(*(c.astype(np.float64) for c in coords[i])), len(coords[i][0])) for i in sorted(tall)]
    shear = _weighted_median(slants)  # each stroke's own axis: one odd digit (a 7's bar) cannot tilt the rest
    yc = 0.5 * (labels.shape[0] - 1)
    area = float(mask.sum())
    edges = float(np.count_nonzero(mask[:, 1:] != mask[:, :-1]) + np.count_nonzero(mask[1:] != mask[:-1]))
    stroke = max(1.0, 2.0 * area / max(edges, 1.0))
    pieces: list[Piece] = []
    specks: list[Piece] = []
    kept = set(keep)
    for i in range(n):
        ys, xs = coords[i]
        xp = xs - shear * (ys - yc)
        piece = Piece(ys, xs, float(xp.min()), float(xp.max()) + 1.0, i)
        h = boxes[i][0].stop - boxes[i][0].start
        if i not in kept:
            specks.append(piece)
            continue
        piece.mark = h < MARK_HEIGHT * height and (piece.right - piece.left) < 0.5 * height
        cuts = [] if piece.mark else _cuts(xp, ys, piece.left, piece.right, height, stroke)
        if not cuts:
            pieces.append(piece)
            continue
        bounds = [piece.left, *cuts, piece.right]
        for j in range(len(bounds) - 1):
            sel = (xp >= bounds[j]) & (xp < bounds[j + 1])
            if sel.any():
                pieces.append(
                    Piece(
                        ys[sel], xs[sel], float(xp[sel].min()), float(xp[sel].max()) + 1.0, i, cut_left=j > 0
                    )
                )
    pieces.sort(key=lambda p: p.centre)
    return pieces, height, specks


# --------------------------------------------------------------------------------------------------
# readings


def _joinable(group: list[Piece], height: float) -> bool:
    """Can these neighbouring pieces be one digit? Not too wide; separate strokes must overlap."""
    left = min(p.left for p in group)
    right = max(p.right for p in group)
    if right - left > MAX_DIGIT_WIDTH * height and len(group) > 1:
        return False  # (a single piece is always a reading, however wide: no path may be impossible)
    if all(p.mark for p in group):
        return False
    for a, b in itertools.pairwise(group):
        if a.component == b.component:
            continue  # (a mark joins a digit only where it overlaps it: a 5's top, not a comma beside it)
        overlap = min(a.right, b.right) - max(a.left, b.left)
        if overlap < MIN_OVERLAP * min(a.right - a.left, b.right - b.left):
            return False
    return True


def _crop(s: np.ndarray, group: list[Piece]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    ys = np.concatenate([p.ys for p in group])
    xs = np.concatenate([p.xs for p in group])
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad = 3
    out = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), np.float32)
    keep = np.zeros(out.shape, bool)
    keep[ys - y0 + pad, xs - x0 + pad] = True
    keep = ndi.binary_dilation(keep, iterations=1)  # the soft edge of the strokes
    region = np.zeros_like(out)
    hy0, hx0 = max(0, y0 - pad), max(0, x0 - pad)
    hy1, hx1 = min(s.shape[0], y1 + pad), min(s.shape[1], x1 + pad)
    region[hy0 - (y0 - pad) : hy1 - (y0 - pad), hx0 - (x0 - pad) : hx1 - (x0 - pad)] = s[hy0:hy1, hx0:hx1]
    out[keep] = region[keep]
    return out, (x0, y0, x1 - x0, y1 - y0)


def read_number(
    image: Any,
    model: ProbabilityModel,
    detector: Any = None,
    *,
    pen_color: str | None = None,
    background_color: str | None = None,
    max_pixels: int | None = None,
) -> NumberReading:
    """Read the digits of a written number left to right (see the module docstring).

    `detector`: a `digitlab.detector.runtime.UncertaintyDetector` or None. Raises the decoding errors and
    `EmptyImageError` like `to_mnist`.
    """
    s, factor = working_ink(
        image, pen_color=pen_color, background_color=background_color, max_pixels=max_pixels
    )
    pieces, height, _specks = pieces_of(s)
    n = len(pieces)
    # every run pieces[i:j] that could be one digit, cropped and preprocessed
    spans: list[tuple[int, int]] = []
    images: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int]] = []
    for i in range(n):
        for j in range(i + 1, min(n, i + MAX_PIECES) + 1):
            group = pieces[i:j]
            if not _joinable(group, height):
                if (
                    j > i + 1
                    and max(p.right for p in group) - min(p.left for p in group) > MAX_DIGIT_WIDTH * height
                ):
                    break
                continue
            crop, box = _crop(s, group)
            try:
                images.append(to_mnist(crop))
            except EmptyImageError:
                continue
            spans.append((i, j))
            boxes.append(box)
    if not images:
        raise EmptyImageError("Nothing written but dots or specks: write a number and try again.")
    X = np.stack(images).reshape(len(images), 784)
    proba = np.asarray(model.predict_proba(X), np.float64)
    p_not = np.zeros(len(X))
    digit_opinion = np.full((len(X), 10), 0.1)  # the detector's own digit probabilities (second opinion)
    if detector is not None:  # only where it can change the reading: candidates that compete with others
        contested = _contested(spans, pieces)
        if contested.any():
            p_not[contested], digit_opinion[contested] = detector.detector_outputs(X[contested])
    top = proba.max(axis=1)
    scores = np.log(np.maximum(top, 1e-6)) + DETECTOR_WEIGHT * np.log(np.maximum(1.0 - p_not, 1e-6))
    for k, (i, j) in enumerate(spans):
        group = pieces[i:j]
        width = (max(p.right for p in group) - min(p.left for p in group)) / height
        scores[k] -= WIDE_COST * max(0.0, width - WIDE_PRIOR)
        scores[k] -= CUT_COST * group[0].cut_left  # this reading cuts through ink on its left
        scores[k] += DIGIT_BONUS
    # best path: best[j] = best score of a reading of pieces[:j]; a mark may also be skipped
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back: list[tuple[int, int] | None] = [None] * (n + 1)  # (start, candidate index or -1 for a skip)
    by_end: dict[int, list[int]] = {}
    for k, (_, j) in enumerate(spans):
        by_end.setdefault(j, []).append(k)
    for j in range(1, n + 1):
        if pieces[j - 1].mark and best[j - 1] > best[j]:
            best[j], back[j] = best[j - 1], (j - 1, -1)
        for k in by_end.get(j, []):
            i = spans[k][0]
            if best[i] + scores[k] > best[j]:
                best[j], back[j] = best[i] + scores[k], (i, k)
    if not np.isfinite(best[n]):
        raise EmptyImageError("Nothing written that looks like digits: write a number and try again.")
    chosen: list[int] = []
    dropped: list[tuple[int, int, int, int]] = []
    j = n
    while j > 0:
        i, k = back[j]
        if k < 0:
            dropped.append(_crop(s, [pieces[i]])[1])
        else:
            chosen.append(k)
        j = i
    chosen.reverse()
    dropped.reverse()
    if detector is not None:
        late = [k for k in chosen if not contested[k]]
        if late:
            p_not[late], digit_opinion[late] = detector.detector_outputs(X[late])
    digits = []
    for k in chosen:
        sure_not = detector is not None and p_not[k] > detector.t_detector and proba[k].max() < DROP_BELOW
        if sure_not and len(chosen) > 1:
            dropped.append(boxes[k])  # a currency sign, a letter: the detector is sure it is no digit
            continue
        p = proba[k]
        digit = int(np.argmax(p))
        if detector is not None:
            p_k = NotDigit(float(p_not[k]), digit_opinion[k])
            uncertain = bool(detector.is_uncertain(model.name, images[k], p, p_not_digit=p_k))
            uncertain = uncertain or float(p_not[k]) > MARK_NOT_DIGIT
        else:
            uncertain = float(p[digit]) < UNCERTAIN_BELOW
        digits.append(
            ReadDigit(
                digit, float(p[digit]), [float(v) for v in p], _scaled(boxes[k], factor), uncertain, images[k]
            )
        )
    confidence = float(np.prod([d.confidence for d in digits])) if digits else 0.0
    return NumberReading(
        text="".join(str(d.digit) for d in digits),
        digits=digits,
        confidence=confidence,
        uncertain=any(d.uncertain for d in digits),
        dropped=sorted(_scaled(b, factor) for b in dropped),
    )


def _contested(spans: list[tuple[int, int]], pieces: list[Piece]) -> np.ndarray:
    """Candidates another candidate overlaps (or made of marks, which may be skipped): only there does
    the score decide anything."""
    cover = np.zeros(len(pieces) + 1, np.int64)
    for i, j in spans:
        cover[i:j] += 1
    return np.array([cover[i:j].max() > 1 or any(p.mark for p in pieces[i:j]) for i, j in spans], dtype=bool)


def _scaled(box: tuple[int, int, int, int], factor: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (int(x * factor), int(y * factor), math.ceil(w * factor), math.ceil(h * factor))
