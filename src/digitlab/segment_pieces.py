"""Stroke pieces of a written number: connected strokes, the writing's slant and height, and candidate cuts
through strokes where digits may touch or overlap (`digitlab.segment` lets the model choose among them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from digitlab.decode import EmptyImageError
from digitlab.preprocess import is_dot

INK_ON = 0.35  # ink strength that counts as a stroke pixel
#: a 1 (one whole stroke) leaning this much more than the writing (|dx/dy| against the number's slant) is
#: `uncertain` in a number: a slash ("1/2", "%") was read as a confident 1. Chosen on `evaluate --numbers
#: --part calibration` (1,000 numbers, seed 200): of 380 single-stroke 1s in numbers read right 0.3 % lean
#: more than 0.3 (the most 0.31), slashes drawn as a person would 0.32-0.53
ONE_LEAN = 0.3
#: a number between brackets: its first and last digits read as 1s, each one whole stroke whose ends both reach
#: past its middle, away from the digits between (`Piece.bow`, in stroke heights): "(5)" and "[5]" were a sure
#: "151". One 1 bows either way often (of 385 single-stroke 1s in calibration numbers read right: median 0.04,
#: 10 % over 0.13); a pair facing each other is rare: 1 of 2,000 calibration numbers read right (seeds 200, 300:
#: "1091") is flagged. A "(" drawn as an arc bows 0.22, a "[" 0.08
BRACKET_BOW = 0.07
MARK_HEIGHT = 0.35  # a stroke lower than this fraction of the writing height is a mark (a dot, a comma, a dash)
#: writing no higher than this many pen widths, every stroke of it at least LINE_FLAT times as wide as high,
#: is a line (a dash, a finger swiping over the canvas), not digits: it was cut into a slice per tenth of its
#: "height" and read as sixteen 0s
LINE_HEIGHT = 3.5
LINE_FLAT = 3.0
#: a dot at most this high and wide (in writing heights) under a digit's strokes, at least DOT_GAP below them,
#: makes the digit a "?" or "!" (read as a sure 7 and 1): `uncertain`
DOT_SIZE = 0.3
DOT_GAP = 0.08
#: a stroke "inside" another keeps this share of the other's width and height from its edges (`shapes_inside`)
INSIDE_MARGIN = 0.1
#: ink thicker than this fraction of the writing height is a filled shape (a blot, a square), not writing: its
#: slices were sure 1s (a filled square read "111"). Calibration numbers: at most 0.17 (`evaluate --numbers --part
#: calibration`, 400 numbers); the canvas's widest pen (40 px) on digits 115 px high: 0.35
BLOT = 0.35
SPECK_AREA = 0.02  # strokes with less ink than this fraction of the biggest stroke are noise
MAX_CUTS = 6  # candidate cuts per stroke (or one per CUT_SPACING of its width, if more)
CUT_MIN_WIDTH = 0.55  # strokes narrower than this (in writing heights) are never cut
SPLIT_WIDTH = 0.75  # a stroke wider than this (in writing heights) may be cut anywhere...
GRID_STEP = 0.1  # ...at its thinnest column near every step this long (in writing heights)
CUT_MARGIN = 0.15  # no cut closer than this (in writing heights) to a stroke's end
CUT_SPACING = 0.08  # ...or to another cut


@dataclass
class Piece:
    """A set of stroke pixels that belong together: a whole stroke, or a slice of one between two cuts."""

    ys: np.ndarray
    xs: np.ndarray
    left: float  # extent in sheared coordinates
    right: float
    component: int
    cut_left: bool = False  # its left edge is a cut through ink
    sliced: bool = False  # a slice of a stroke that was cut
    mark: bool = False
    shear: float = 0.0  # the writing's slant (dx/dy) that `left` and `right` are sheared by

    @property
    def centre(self) -> float:
        return 0.5 * (self.left + self.right)

    @property
    def lean(self) -> float:
        """dx/dy of this stroke's own axis against the writing's slant: a 1 leaning apart from its
        neighbours is more likely a slash ("1/2")."""
        return _slant(self.ys.astype(np.float64), self.xs.astype(np.float64)) - self.shear


    @property
    def bow(self) -> float:
        """How far this stroke's two ends reach out to the right (> 0) or the left (< 0) of its middle, in stroke
        heights: its top and bottom tenths' reach past its middle's, the nearer end counted ("(" and "[" > 0,
        ")" and "]" < 0; a 1 with a flag at one end, or serifs on both sides, about 0)."""
        ys, xs = self.ys.astype(np.float64), self.xs.astype(np.float64)
        h = ys.max() - ys.min() + 1
        if len(ys) < 10 or h < 10:
            return 0.0
        at = (ys - ys.min()) / h
        ends, middle = (xs[at < 0.1], xs[at >= 0.9]), xs[(at >= 0.3) & (at < 0.7)]
        right = min(end.max() for end in ends) - middle.max()
        left = middle.min() - max(end.min() for end in ends)
        return float(right - left) / h


def _slant(ys: np.ndarray, xs: np.ndarray) -> float:
    """dx/dy of the writing's main axis (second moments of the stroke pixels), clipped to a sane range."""
    if len(ys) < 10:
        return 0.0
    yc = ys - ys.mean()
    var = float(np.sum(yc * yc))  # (elementwise: a BLAS dot spins up threads for a few thousand pixels)
    return float(np.clip(np.sum(yc * (xs - xs.mean())) / var, -0.7, 0.7)) if var > 0 else 0.0


def thickness(mask: np.ndarray) -> float:
    """A shape's mean thickness in pixels (the pen width of strokes): twice its area over its outline's length."""
    edges = np.count_nonzero(mask[:, 1:] != mask[:, :-1]) + np.count_nonzero(mask[1:] != mask[:-1])
    return 2.0 * float(mask.sum()) / max(edges, 1)


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
    (digits that overlap); a 0 is never cut down its middle unless it is too wide for one digit. A stroke
    wider than SPLIT_WIDTH is also cut near every GRID_STEP: overlapping digits leave no thin column, and
    too few cuts were the main reason such numbers were read with digits missing.
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
    if width > SPLIT_WIDTH * height:  # maybe more than one digit: also its weakest column every GRID_STEP
        found += [(float("inf"), i) for i in _grid_cuts(smooth, margin, GRID_STEP * height)]
    spacing = max(2, CUT_SPACING * height)
    limit = max(MAX_CUTS, math.ceil(width / spacing))
    chosen: list[int] = []
    for _, i in found:
        if all(abs(i - j) >= spacing for j in chosen):
            chosen.append(i)
        if len(chosen) >= limit:
            break
    return sorted(lo + i + 0.5 for i in chosen)


def _grid_cuts(smooth: np.ndarray, margin: int, step: float) -> list[int]:
    """The thinnest column near every `step`-th column: where overlapping digits (no thin column
    between them) may meet; the model tells which of these cuts are real."""
    out = []
    centre = margin + 0.5 * step
    while centre < len(smooth) - margin:
        lo = max(margin, int(centre - 0.3 * step))
        hi = min(len(smooth) - margin, int(centre + 0.3 * step) + 1)
        if lo < hi:
            out.append(lo + int(np.argmin(smooth[lo:hi])))
        centre += step
    return out


#: a frame's ink lies within this share of its box's short side from the box's edges, ...
FRAME_BAND = 0.12
#: ... and reaches along each of the four sides for at least this share of it (an oval 0 reaches ~65 %)
FRAME_SIDES = 0.85
#: the ink inside a frame: at least this share of the frame's short side tall (a box around a dot is a 0 or a 4)
FRAME_CONTENT = 0.3


def without_frame(s: np.ndarray) -> np.ndarray:
    """The ink less a box drawn around all the rest of it (a number written in a box: its sides were read as 1s,
    "27" a sure "171", or the box cut into so many pieces the number was refused as a scrawl). A box is one
    stroke whose ink keeps near its bounding box's edges along most of all four sides, with every other stroke
    inside it and of some size; a round 0 reaches only ~65 % along each side. Anything else comes back as is."""
    mask = s >= INK_ON
    across, down = mask.sum(axis=1), mask.sum(axis=0)
    rows, cols = np.flatnonzero(across), np.flatnonzero(down)
    if not len(rows) or across.max() < 0.5 * (cols[-1] - cols[0]) or down.max() < 0.5 * (rows[-1] - rows[0]):
        return s  # (no row and column inked over half the ink's box: no box, found without labelling, ~2 ms)
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n < 2:
        return s
    boxes = ndi.find_objects(labels)
    areas = [(b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes]
    k = int(np.argmax(areas))  # (only the stroke with the largest box can hold every other one)
    outer = boxes[k]
    mass = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    mass[k] = 0
    inner = [b for i, b in enumerate(boxes) if mass[i] >= SPECK_AREA * mass.max()]  # (a photo's specks may be out)
    if not all(outer[0].start < b[0].start and b[0].stop < outer[0].stop and outer[1].start < b[1].start
               and b[1].stop < outer[1].stop for b in inner):  # fmt: skip
        return s
    h, w = outer[0].stop - outer[0].start, outer[1].stop - outer[1].start
    if max(b[0].stop - b[0].start for b in inner) < FRAME_CONTENT * min(h, w):
        return s
    frame = labels[outer] == k + 1
    if not _is_box(frame):
        return s
    out = s.copy()
    out[outer][ndi.binary_dilation(frame, iterations=2)] = 0.0  # (and its soft edge)
    return out


def _is_box(mask: np.ndarray) -> bool:
    """Does the stroke (a boolean mask cropped to its box) keep within FRAME_BAND of the short side from its box's
    edges (no ink of its own further in: a stroke, not a box) and along at least FRAME_SIDES of all four sides?"""
    band = max(2, round(FRAME_BAND * min(mask.shape)))
    if mask[band:-band, band:-band].any():
        return False
    sides = (mask[:band].any(axis=0), mask[-band:].any(axis=0), mask[:, :band].any(axis=1), mask[:, -band:].any(axis=1))
    return min(float(side.mean()) for side in sides) >= FRAME_SIDES


def pieces_of(
    s: np.ndarray, *, max_strokes: int | None = None, too_many: Callable[[int], Exception] | None = None
) -> tuple[list[Piece], float, list[Piece]]:
    """Stroke pieces in reading order, the writing height, and the noise specks that were dropped. More strokes
    than `max_strokes` raise `too_many(count)` before any is measured or cut (a 12 KB picture of squared paper,
    40,000 cells, cost /read 6-10 s of CPU to refuse: a probe, session 30)."""
    mask = s >= INK_ON
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        raise EmptyImageError("Nothing written: the image is blank. Write a number and try again.")
    mass = np.bincount(labels.ravel(), weights=s.ravel(), minlength=n + 1)[1:]
    keep = [int(i) for i in np.flatnonzero(mass >= SPECK_AREA * mass.max())]
    if max_strokes is not None and len(keep) > max_strokes:
        raise (too_many or ValueError)(len(keep))
    boxes = ndi.find_objects(labels)
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
    stroke = max(1.0, thickness(mask))
    flat = all(boxes[i][1].stop - boxes[i][1].start >= LINE_FLAT * (boxes[i][0].stop - boxes[i][0].start) for i in tall)
    if flat and height < LINE_HEIGHT * stroke:
        raise EmptyImageError("Nothing written that looks like digits, only a line: write a number and try again.")
    if len(keep) == 1:  # one lone mark: a dot by `to_mnist`'s rule (short for its pen, small, round)?
        extent = max(sl.stop - sl.start for sl in boxes[keep[0]])
        if is_dot(labels[boxes[keep[0]]] == keep[0] + 1, extent, stroke, max(s.shape)):
            raise EmptyImageError("Nothing written but a dot: write a number and try again.")
    pieces: list[Piece] = []
    specks: list[Piece] = []
    kept = set(keep)
    for i in range(n):
        ys, xs = coords[i]
        xp = xs - shear * (ys - yc)
        piece = Piece(ys, xs, float(xp.min()), float(xp.max()) + 1.0, i, shear=shear)
        h = boxes[i][0].stop - boxes[i][0].start
        if i not in kept:
            specks.append(piece)
            continue
        piece.mark = h < MARK_HEIGHT * height  # whatever its width: a dash ("20-25") was read as a 2
        cuts = [] if piece.mark else _cuts(xp, ys, piece.left, piece.right, height, stroke)
        if not cuts:
            pieces.append(piece)
            continue
        bounds = [piece.left, *cuts, piece.right]
        for j in range(len(bounds) - 1):
            sel = (xp >= bounds[j]) & (xp < bounds[j + 1])
            if sel.any():
                left, right = float(xp[sel].min()), float(xp[sel].max()) + 1.0
                pieces.append(Piece(ys[sel], xs[sel], left, right, i, cut_left=j > 0, sliced=True, shear=shear))
    pieces.sort(key=lambda p: p.centre)
    return pieces, height, specks


def leaning_stroke(group: list[Piece]) -> bool:
    """Is this candidate digit one whole stroke leaning apart from the writing (`ONE_LEAN`)?"""
    return len(group) == 1 and not group[0].sliced and abs(group[0].lean) > ONE_LEAN


def bracketed(first: list[Piece], last: list[Piece]) -> bool:
    """Are a number's first and last candidate digits a pair of brackets around it (`BRACKET_BOW`): each one
    whole stroke, the first bowed left, the last bowed right?"""
    whole = len(first) == len(last) == 1 and not first[0].sliced and not last[0].sliced
    return whole and first[0].bow > BRACKET_BOW and last[0].bow < -BRACKET_BOW


def dot_below(group: list[Piece], marks: list[Piece], height: float) -> bool:
    """Is there a dot under this candidate digit's strokes, apart from them (the dot of a "?" or "!")?

    Digits have no such dot: a decimal point or a comma sits at the writing's baseline, beside a digit,
    not below the bottom of its strokes."""
    main = [p for p in group if not p.mark]
    if not main:
        return False
    bottom = max(int(p.ys.max()) for p in main)
    left = min(int(p.xs.min()) for p in main) - 0.1 * height
    right = max(int(p.xs.max()) for p in main) + 0.1 * height
    for m in marks:
        top, low = int(m.ys.min()), int(m.ys.max())
        small = low - top + 1 <= DOT_SIZE * height and int(m.xs.max()) - int(m.xs.min()) + 1 <= DOT_SIZE * height
        if small and DOT_GAP * height <= top - bottom <= 0.6 * height and left <= float(m.xs.mean()) <= right:
            return True
    return False


def shapes_inside(group: list[Piece], pieces: list[Piece]) -> int:
    """How many other strokes lie wholly inside one of this candidate digit's strokes, well within its box (the
    eyes and mouth of a smiley in its face: read "0", 100 % sure, the marks left out; a newcomer's tour, session
    31). A digit has none; a dotted zero has one."""
    found: set[int] = set()
    for host in {p.component for p in group if not p.mark}:  # a stroke's slices together: the whole stroke
        parts = [p for p in group if p.component == host]
        y0, y1 = min(int(p.ys.min()) for p in parts), max(int(p.ys.max()) for p in parts)
        x0, x1 = min(int(p.xs.min()) for p in parts), max(int(p.xs.max()) for p in parts)
        my, mx = INSIDE_MARGIN * (y1 - y0), INSIDE_MARGIN * (x1 - x0)
        for p in pieces:
            if p.component != host and (y0 + my < p.ys.min() and p.ys.max() < y1 - my
                                        and x0 + mx < p.xs.min() and p.xs.max() < x1 - mx):  # fmt: skip
                found.add(p.component)
    return len(found)


def odd_marks(group: list[Piece], marks: list[Piece], pieces: list[Piece], height: float) -> bool:
    """Marks that make this candidate digit no digit: a dot under it (a "?" or "!", `dot_below`) or two strokes
    or more inside it (a face, `shapes_inside`)."""
    return dot_below(group, marks, height) or shapes_inside(group, pieces) >= 2


def blotted(s: np.ndarray, height: float) -> bool:
    """Is the ink a filled shape rather than strokes (`BLOT`)?"""
    return thickness(s >= INK_ON) > BLOT * height


def two_lines(boxes: list[tuple[int, int, int, int]]) -> bool:
    """Do the digits (x, y, w, h) form two lines, at least two digits each, no digit of one beside one of the
    other? (A number is read on one line: "703" over "5730" was read "5770330", not flagged.)"""
    order = sorted(boxes, key=lambda b: b[1] + b[3] / 2)
    for k in range(2, len(order) - 1):
        upper, lower = order[:k], order[k:]
        if max(b[1] + b[3] for b in upper) <= min(b[1] for b in lower):
            return True
    return False


def stacked(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Do two digits' boxes (x, y, w, h) share most of their columns and none of their rows?"""
    across = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    down = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return across >= 0.5 * min(a[2], b[2]) and down <= 0
