"""A written number -> its digits, left to right: segmentation scored by the model itself.

Why this shape: geometry alone cannot split handwriting (gaps between digits can be narrower than gaps
inside a 4; digits touch; a 5's top floats apart), and the model alone cannot see a row of digits. So
geometry only proposes and the model decides:

1. Ink (`segment_ink`): the image's ink map (`preprocess.ink_map`; photos of paper are first flattened
   against their own, unevenly lit, background; ruled lines across the image are removed).
2. Slant: one shear for the whole number from the ink's second moments; columns are read in sheared
   coordinates, so a cut between slanted digits is slanted too.
3. Pieces (`segment_pieces`): connected strokes. Strokes much lower than the writing (a dot, a comma, a
   dash) are *marks*: they may join a digit (the top of a 5) or be dropped, never read as a digit on their
   own. A writing that is only a line (a dash alone, a finger swiping over the canvas) is no number.
   Strokes wider than a digit get candidate cuts at thin columns of their projection (where touching
   digits meet) and, when wider than 0.75 writing heights (overlapping digits have no thin column between
   them), at the thinnest column near every tenth of a height: the model tells which cuts are real.
4. Readings: every run of neighbouring pieces that could be one digit (`segment_runs`: not too wide, unless it
   is one whole stroke, a 7 drawn wider than tall; separate strokes only when they overlap horizontally or nearly
   touch) is cropped without the bits of a neighbour a cut took along, preprocessed like a single drawing (`to_mnist`) and scored by the model in one batch, and by
   the not-a-digit detector where it can change the answer, and by the segment verifier
   (`segment_verifier`: is this crop one whole digit, not a fragment or two merged neighbours? The model
   is sure of itself on merged crops). Dynamic programming picks the reading whose digits are the most
   probable and most surely whole (cuts through ink, over-wide digits and wide 1s cost a little).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
from scipy import ndimage as ndi

from digitlab.decode import NOTHING_DRAWN, EmptyImageError
from digitlab.detector.runtime import NotDigit
from digitlab.errors import DigitlabError
from digitlab.models.registry import predict_with_opinion
from digitlab.preprocess import to_mnist
from digitlab.segment_agree import agree, line_pieces
from digitlab.segment_ink import working_ink
from digitlab.segment_pieces import (
    Piece,
    blotted,
    bracketed,
    leaning_stroke,
    odd_marks,
    pieces_of,
    stacked,
    two_lines,
)
from digitlab.segment_runs import digit_runs, fewest_digits, width, work
from digitlab.segment_verifier import GEOMETRY, verifier_features

WIDE_PRIOR = 0.7  # digits wider than this (in writing heights) pay WIDE_COST per extra height
#: chosen on `evaluate --numbers --part calibration` (500 numbers, seeds 200 / 300) with the segment verifier:
#: 2.0 (before it) 420 / 405 right, 1.0 423 / 408, 0.75 424 / 406, 0.5 423 / 407; held out 77.8 -> 77.9 %. A
#: lower cost reads a big single digit written wide as one (a 5 of 1.1 heights was "55", a 2 of 1.5 "22")
WIDE_COST = 0.75
ONE_WIDTH = 0.35  # a 1 is one thin stroke: wider than this (in writing heights)...
ONE_WIDE_COST = 2.0  # ...it pays this per extra height
CUT_COST = math.log(2.0)  # cutting through ink is a guess: it must buy a clearly better reading
#: added to the one stroke a writing is (cut into candidates) read whole as one digit: one real digit on the square
#: canvas (1,200 of USPS test, Semeion, MNIST test at 200-280 px) was read as two 23 times, 37 wrong (sure: 14);
#: with 1.0: 14 times, 29 wrong (11). Calibration numbers (500, seeds 200 / 300): 85.8 / 83.2 -> 85.6 / 83.2 %;
#: given to every whole stroke, not only a writing's only one, 0.5 cost 0.6 / 0.4 points and 1.0 1.8 / 1.2
STROKE_BONUS = 1.0
#: a bit of a cut slice smaller than this share of the slice's biggest blob is a neighbour's stroke tip
#: the cut took along: left out of the digit's crop
FRAGMENT_SHARE = 0.3
DIGIT_BONUS = 0.0  # added per digit read: evens out the sum of log-probabilities' preference for fewer digits
#: added per digit read with the verifier (whose log P(whole digit) is below 0 for every digit, so that
#: readings with fewer digits are not favoured); chosen on `evaluate --numbers --part calibration`
WHOLE_BONUS = 1.0
DETECTOR_WEIGHT = 0.15  # weight of log p(digit) from the not-a-digit detector in a digit's score
ONE_DETECTOR_WEIGHT = 0.075  # ...for a thin 1 (the detector, which sees a lone stroke as odd, matters less)
#: p(not a digit) counts at most this much: on a blurred photo every candidate can look odd to the
#: detector, and an unbounded penalty per digit would favour readings with fewer digits
NOT_DIGIT_CAP = 0.999
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
#: a digit taller than this many writing heights is several, one above another (a number is read on one line:
#: 1, 2 and 3 stacked were read as "33", sure and unflagged; digits read apart but stacked are `segment_pieces.stacked`);
#: the benchmark's digits vary up to 1.4x
STACKED = 1.6
MAX_DIGITS = 32  #: the longest number read (`true_text` takes up to 32 digits too)
#: more separate marks than this are no written number (noise, a texture, a page of text): refused before
#: the work grows with them
MAX_MARKS = 4 * MAX_DIGITS
#: more work than this is no written number either: refused before any of it, so that a reading costs at
#: most ~1 s of CPU (a 1 KB zig-zag line, 404 candidates, cost 2 s; 24 tall strokes, 245 large crops, 2.4 s).
#: Real numbers need less: of 6000 of 2-6 digits (`evaluate --numbers`, both parts) 99 % need under 200 and
#: 5 over 300 (all read wrong); of 3000 scaled up to 800 px, 17 need over 300 (3 of them read right)
MAX_WORK = 300


class NotANumberError(DigitlabError):
    code = "not_a_number"


#: (a newcomer's tour, session 26: one long wavy line on the Number canvas, a plain canvas, was told "(567 ways to
#: split it): ... on a plain background")
_NOT_A_NUMBER = (f"This does not look like a written number ({{}}): write up to {MAX_DIGITS} digits side by side, "
                 "on a plain background for a photo, and try again.")  # fmt: skip


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
# readings


def _crop(s: np.ndarray, group: list[Piece]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The group's ink alone (a neighbour's strokes left out), on a black margin; and its box."""
    ys, xs = _own_pixels(group)
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


def _own_pixels(group: list[Piece]) -> tuple[np.ndarray, np.ndarray]:
    """Stroke pixels of the group, less the small bits a cut leaves of a neighbour digit.

    A straight cut between touching or overlapping digits takes the tip of the neighbour's stroke
    along; inside the slice that tip is a separate blob much smaller than the digit's own stroke.
    """
    ys = np.concatenate([p.ys for p in group])
    xs = np.concatenate([p.xs for p in group])
    sliced = np.concatenate([np.full(len(p.ys), p.sliced) for p in group])
    if not sliced.any() or FRAGMENT_SHARE <= 0:
        return ys, xs
    y0, x0 = int(ys.min()), int(xs.min())
    grid = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), bool)
    grid[ys[sliced] - y0, xs[sliced] - x0] = True
    labels, n = ndi.label(grid, structure=np.ones((3, 3), bool))
    if n < 2:
        return ys, xs
    sizes = np.bincount(labels.ravel())[1:]
    small = np.zeros(n + 1, bool)
    small[1:] = sizes < FRAGMENT_SHARE * sizes.max()
    drop = sliced & small[labels[ys - y0, xs - x0]]
    return (ys, xs) if drop.all() else (ys[~drop], xs[~drop])


def read_number(
    image: Any,
    model: ProbabilityModel,
    detector: Any = None,
    *,
    verifier: Any = None,
    line_reader: Any = None,
    pen_color: str | None = None,
    background_color: str | None = None,
    max_pixels: int | None = None,
) -> NumberReading:
    """Read the digits of a written number left to right (see the module docstring).

    `detector`: a `digitlab.detector.runtime.UncertaintyDetector` or None; `verifier`: a
    `digitlab.segment_verifier.SegmentVerifier` or None (then only the model's probabilities and the
    geometry's costs decide); `line_reader`: a `digitlab.line_reader.LineReader` or None (`segment_agree`).
    Raises the decoding errors and `EmptyImageError` like `to_mnist`.
    """
    c = segmented(image, pen_color=pen_color, background_color=background_color, max_pixels=max_pixels)
    s, factor, pieces, height, spans, images, boxes, X, specks = c
    proba, own = predict_with_opinion(model, X)  # with the CNN's networks' own opinion, for its flag
    proba = np.asarray(proba, np.float64)
    whole = np.zeros(len(X))  # log P(one whole digit) by the verifier: 0 without one
    if verifier is not None:
        whole = verifier.log_whole(c.verifier_features()) + WHOLE_BONUS
    p_not = np.zeros(len(X))
    digit_opinion = np.full((len(X), 10), 0.1)  # the detector's own digit probabilities (second opinion)
    if detector is not None:
        p_not, digit_opinion = _not_digit(detector, X, spans, pieces, height, proba, whole)
    scores = _scores(spans, pieces, height, proba, p_not, whole)
    chosen, skipped = _best_path(spans, scores, pieces)
    read_as = {k: int(np.argmax(proba[k])) for k in chosen}
    disagree, line_sure = dict.fromkeys(chosen, False), False
    if line_reader is not None:  # the line reader, which never cuts, as a second opinion (`segment_agree`)
        frames, marks = line_reader.frames(s), [p.mark for p in pieces]
        agreed = agree(frames, spans, scores, proba, marks, chosen, skipped)
        unseen = [k for k in agreed.chosen if p_not[k] == 0.0]  # the detector skipped what could not win alone
        if detector is not None and unseen:
            p_not[unseen], digit_opinion[unseen] = detector.detector_outputs(X[unseen])
            scores = _scores(spans, pieces, height, proba, p_not, whole)
            agreed = agree(frames, spans, scores, proba, marks, chosen, skipped)
        chosen, skipped = agreed.chosen, agreed.skipped
        read_as, disagree = dict(zip(chosen, agreed.digits)), dict(zip(chosen, agreed.disagree))
        line_sure = agreed.sure  # the line reader reads this very text, surely: confidence alone is no doubt
        cut = _line_cut(s, frames, agreed.unformed, pieces, model, detector) if agreed.unformed else None
        if cut is not None:  # its text, surely, where no run of candidates gave it: cut where it sees the digits
            pieces, spans, images, boxes, proba, own, p_not, digit_opinion = cut
            chosen, skipped, line_sure = list(range(len(pieces))), [], True
            read_as = {k: int(ch) for k, ch in enumerate(agreed.unformed)}
            disagree = {k: read_as[k] != int(np.argmax(proba[k])) for k in chosen}  # a cut the model reads otherwise
    dropped = [_crop(s, [pieces[i]])[1] for i in skipped]
    digits = []
    marks = [p for p in pieces if p.mark]
    ends = (chosen[0], chosen[-1]) if len(chosen) > 2 else ()
    brackets = bool(ends) and bracketed(*(pieces[slice(*spans[k])] for k in ends))  # "(5)" was a sure "151"
    for k in chosen:
        sure_not = detector is not None and p_not[k] > detector.t_detector and proba[k].max() < DROP_BELOW
        if sure_not and len(chosen) > 1:
            dropped.append(boxes[k])  # a currency sign, a letter: the detector is sure it is no digit
            continue
        p = proba[k]
        digit = read_as[k]
        if detector is not None:
            p_k = NotDigit(float(p_not[k]), digit_opinion[k])
            uncertain = not line_sure and bool(detector.is_uncertain(model.name, images[k], p, p_not_digit=p_k,
                                                                     own_opinion=None if own is None else own[k]))
            uncertain = uncertain or float(p_not[k]) > MARK_NOT_DIGIT
        else:
            uncertain = not line_sure and float(p[digit]) < UNCERTAIN_BELOW
        uncertain = uncertain or disagree[k] or (digit != int(np.argmax(p)) and not line_sure)  # the readers differ
        uncertain = uncertain or boxes[k][3] > STACKED * height  # digits written one above another
        uncertain = uncertain or (digit == 1 and len(chosen) > 1 and leaning_stroke(pieces[slice(*spans[k])]))
        uncertain = uncertain or (digit == 1 and brackets and k in ends)
        uncertain = uncertain or odd_marks(pieces[slice(*spans[k])], marks, [*pieces, *specks], height)  # "?", a face
        digits.append(
            ReadDigit(
                digit, float(p[digit]), [float(v) for v in p], _scaled(boxes[k], factor), uncertain, images[k]
            )
        )
    for a, b in itertools.pairwise(digits):  # one above the other, not side by side: the order is a guess
        if stacked(a.box, b.box):
            a.uncertain = b.uncertain = True
    # two numbers, one under the other, were read interleaved; a filled shape's slices were read as 1s
    if two_lines([d.box for d in digits]) or blotted(s, height):
        for d in digits:
            d.uncertain = True
    if len(digits) > MAX_DIGITS:
        raise NotANumberError(_NOT_A_NUMBER.format(f"{len(digits)} digit-like marks"))
    confidence = float(np.prod([d.confidence for d in digits])) if digits else 0.0
    return NumberReading(
        text="".join(str(d.digit) for d in digits),
        digits=digits,
        confidence=confidence,
        uncertain=any(d.uncertain for d in digits),
        dropped=sorted(_scaled(b, factor) for b in dropped),
    )


def _line_cut(s: np.ndarray, frames: np.ndarray, text: str, pieces: list[Piece], model: Any, detector: Any):
    """`read_number`'s candidates, one per digit, of the ink cut where the line reader reads `text`
    (`segment_agree.line_pieces`): (pieces, spans, images, boxes, proba, own, p_not, digit opinion), or None
    where a digit gets no ink."""
    try:
        cut = line_pieces(frames, text, pieces, s)
        crops = [_crop(s, [piece]) for piece in cut]
        images = [to_mnist(crop) for crop, _ in crops]
    except (EmptyImageError, ValueError):  # a digit cut to a speck; a text its frames cannot hold
        return None
    if not images:  # (`line_pieces`: a digit would get no ink)
        return None
    X = np.stack(images).reshape(len(images), 784)
    proba, own = predict_with_opinion(model, X)
    p_not, opinion = (np.zeros(len(X)), np.full((len(X), 10), 0.1)) if detector is None else detector.detector_outputs(X)
    spans = [(k, k + 1) for k in range(len(cut))]
    return cut, spans, images, [box for _, box in crops], np.asarray(proba, np.float64), own, p_not, opinion


class Segmented(NamedTuple):
    """A written number cut into candidate digits: its ink at working resolution, input pixels per working
    pixel, stroke pieces, writing height, and per candidate its run of pieces, 28x28 image and box."""

    ink: np.ndarray
    factor: float
    pieces: list[Piece]
    height: float
    spans: list[tuple[int, int]]
    images: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]
    X: np.ndarray  # the images as (n, 784)
    specks: tuple[Piece, ...] = ()  # ink too small to be a stroke (a smiley's eyes in a large face)

    def verifier_features(self) -> np.ndarray:
        return verifier_features(self.X, candidate_geometry(self.spans, self.pieces, self.height))


def segmented(image: Any, **decode: Any) -> Segmented:
    """Ink, pieces and every candidate digit of a written number, as `read_number` scores them (and as the
    segment verifier learns them). `decode`: `pen_color`, `background_color`, `max_pixels`."""
    try:
        s, factor = working_ink(image, **decode)
    except EmptyImageError as exc:
        if str(exc) != NOTHING_DRAWN:
            raise
        # the preprocessing's message asks for a digit: here a number is asked for
        raise EmptyImageError("Nothing written: the image is blank. Write a number and try again.") from exc
    too_many = lambda count: NotANumberError(_NOT_A_NUMBER.format(f"{count} separate marks"))
    pieces, height, specks = pieces_of(s, max_strokes=MAX_MARKS, too_many=too_many)
    if len(pieces) > MAX_MARKS:
        raise NotANumberError(_NOT_A_NUMBER.format(f"{len(pieces)} separate marks"))
    spans, images, boxes = candidates(s, pieces, height)
    return Segmented(s, factor, pieces, height, spans, images, boxes, np.stack(images).reshape(len(images), 784), tuple(specks))


def candidates(
    s: np.ndarray, pieces: list[Piece], height: float
) -> tuple[list[tuple[int, int]], list[np.ndarray], list[tuple[int, int, int, int]]]:
    """Every run pieces[i:j] that could be one digit, cropped and preprocessed: (spans, 28x28s, boxes)."""
    runs = digit_runs(pieces, height)
    fewest = fewest_digits(runs, pieces)
    if DROP_BELOW <= 0 and MAX_DIGITS < fewest < math.inf:  # `read_number` would refuse it after the work
        raise NotANumberError(_NOT_A_NUMBER.format(f"at least {int(fewest)} digit-like marks"))
    if work(runs, pieces) > MAX_WORK:  # a texture or a scrawl, not a number: refused before seconds of work
        raise NotANumberError(_NOT_A_NUMBER.format(f"a scrawl that could be cut into digits {len(runs)} ways"))
    spans: list[tuple[int, int]] = []
    images: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int]] = []
    for i, j in runs:
        crop, box = _crop(s, pieces[i:j])
        try:
            images.append(to_mnist(crop))
        except EmptyImageError:
            continue
        spans.append((i, j))
        boxes.append(box)
    if not images:
        raise EmptyImageError("Nothing written but dots or specks: write a number and try again.")
    return spans, images, boxes


def _scores(
    spans: list[tuple[int, int]],
    pieces: list[Piece],
    height: float,
    proba: np.ndarray,
    p_not: np.ndarray,
    whole: np.ndarray | float = 0.0,
) -> np.ndarray:
    """How good each candidate is as one digit: log of its top probability, of being a digit at all and
    (`whole`, the verifier's) of being one whole digit, less the cost of being wider than a digit (a 1:
    than a thin stroke) or of cutting through ink."""
    widths = np.array([width(pieces[i:j]) for i, j in spans]) / height
    one = proba.argmax(axis=1) == 1
    thin_one = one & (widths <= ONE_WIDTH)  # the detector finds a lone stroke odd: trust it less there
    weight = np.where(thin_one, ONE_DETECTOR_WEIGHT, DETECTOR_WEIGHT)
    p_digit = 1.0 - np.minimum(p_not, NOT_DIGIT_CAP)
    scores = np.log(np.maximum(proba.max(axis=1), 1e-6)) + weight * np.log(p_digit)
    scores -= WIDE_COST * np.maximum(0.0, widths - WIDE_PRIOR)
    scores -= ONE_WIDE_COST * one * np.maximum(0.0, widths - ONE_WIDTH)
    scores -= CUT_COST * np.array([pieces[i].cut_left for i, _ in spans])  # a cut through ink on its left
    strokes = [k for k, p in enumerate(pieces) if not p.mark]
    if len({pieces[k].component for k in strokes}) == 1:  # the writing is one stroke: most likely one digit
        scores += STROKE_BONUS * np.array([i <= strokes[0] and strokes[-1] < j for i, j in spans])
    return scores + whole + DIGIT_BONUS


def candidate_geometry(spans: list[tuple[int, int]], pieces: list[Piece], height: float) -> np.ndarray:
    """(n, len(GEOMETRY)) of every candidate, for the verifier: width and height in writing heights, cuts
    through ink on its left and right, pieces, separate strokes, ink pixels per squared writing height."""
    n = len(pieces)
    rows = np.zeros((len(spans), len(GEOMETRY)), np.float32)
    for k, (i, j) in enumerate(spans):
        group = pieces[i:j]
        top = min(int(p.ys.min()) for p in group)
        bottom = max(int(p.ys.max()) for p in group)
        rows[k] = (
            width(group) / height,
            (bottom - top + 1) / height,
            float(pieces[i].cut_left),
            float(j < n and pieces[j].cut_left),
            j - i,
            len({p.component for p in group}),
            sum(len(p.ys) for p in group) / height**2,
        )
    return rows


def _best_path(
    spans: list[tuple[int, int]], scores: np.ndarray, pieces: list[Piece]
) -> tuple[list[int], list[int]]:
    """(candidates of the best-scoring reading of all pieces, marks it skips)."""
    n = len(pieces)
    best, back = _prefix_best(spans, scores, [p.mark for p in pieces])
    if not np.isfinite(best[n]):
        raise EmptyImageError("Nothing written that looks like digits: write a number and try again.")
    chosen: list[int] = []
    skipped: list[int] = []
    j = n
    while j > 0:
        prev, k = back[j]
        if k < 0:
            skipped.append(prev)
        else:
            chosen.append(k)
        j = prev
    return chosen[::-1], skipped[::-1]


def _prefix_best(
    spans: list[tuple[int, int]], scores: np.ndarray, marks: list[bool]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Dynamic programming over where each digit ends: best[j] is the best score of a reading of the
    first j pieces (a mark may be skipped instead of read); back[j] = (previous end, candidate or -1)."""
    n = len(marks)
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back: list[tuple[int, int]] = [(0, -1)] * (n + 1)
    by_end: dict[int, list[int]] = {}
    for k, (_, j) in enumerate(spans):
        by_end.setdefault(j, []).append(k)
    for j in range(1, n + 1):
        if marks[j - 1] and best[j - 1] > best[j]:
            best[j], back[j] = best[j - 1], (j - 1, -1)
        for k in by_end.get(j, []):
            i = spans[k][0]
            if best[i] + scores[k] > best[j]:
                best[j], back[j] = best[i] + scores[k], (i, k)
    return best, back


def _not_digit(
    detector: Any,
    X: np.ndarray,
    spans: list[tuple[int, int]],
    pieces: list[Piece],
    height: float,
    proba: np.ndarray,
    whole: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's p(not a digit) for every candidate that can be in the best reading, 0 for the rest,
    and its digit probabilities (the second opinion of the "not sure" rule; 0.1 each for the rest).

    The detector is the costliest step (~0.5 ms a crop, dozens of crops where digits touch) and its term
    only lowers a score. So the scores without it bound every reading from above: a candidate whose best
    reading, so bounded, falls short of a reading actually scored with the detector can never be chosen
    and is not shown to it. The reading is the same as with every candidate scored.
    """
    p_not = np.zeros(len(X))
    digits = np.full((len(X), 10), 0.1)
    upper = _scores(spans, pieces, height, proba, p_not, whole)
    first, _ = _best_path(spans, upper, pieces)
    if first:
        p_not[first], digits[first] = detector.detector_outputs(X[first])
    floor = float(_scores(spans, pieces, height, proba, p_not, whole)[first].sum())
    n, marks = len(pieces), [p.mark for p in pieces]
    ahead, _ = _prefix_best(spans, upper, marks)
    behind, _ = _prefix_best([(n - j, n - i) for i, j in spans], upper, marks[::-1])
    through = np.array([ahead[i] + upper[k] + behind[n - j] for k, (i, j) in enumerate(spans)])
    need = through >= floor - 1e-9
    need[first] = False
    if need.any():
        p_not[need], digits[need] = detector.detector_outputs(X[need])
    return p_not, digits


def _scaled(box: tuple[int, int, int, int], factor: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (int(x * factor), int(y * factor), math.ceil(w * factor), math.ceil(h * factor))
