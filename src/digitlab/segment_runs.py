"""Which runs of neighbouring pieces of a written number could be one digit, and the work of reading them
(`segment` reads each run as a candidate digit and picks the best reading). Geometry only: no model here."""

from __future__ import annotations

import itertools
import math

from digitlab.segment_pieces import Piece

MAX_DIGIT_WIDTH = 1.25  # no digit is wider than this many writing heights (but one whole stroke: `stroke_end`)
MIN_OVERLAP = 0.3  # separate strokes form one digit only if they overlap this much horizontally...
JOIN_GAP = 0.05  # ...or are at most this far apart (in writing heights: a 0 written in two strokes)
MAX_PIECES = 14  # pieces per digit (a cut stroke is sliced every tenth of a writing height)
#: the reading's work is per candidate digit: cropping and preprocessing it (~2 ms, and ~0.06 ms more per
#: 1000 pixels of its crop) and classifying it (~1.3 ms with the verifier and the detector). So the work is
#: counted in candidates before any is done, a crop of this many pixels counting as one candidate more
CROP_PIXELS = 50_000


def joinable(group: list[Piece], height: float) -> bool:
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
        if overlap < MIN_OVERLAP * min(a.right - a.left, b.right - b.left) and -overlap > JOIN_GAP * height:
            return False
    return True


def digit_runs(pieces: list[Piece], height: float) -> list[tuple[int, int]]:
    """Every run (i, j) of pieces[i:j] that could be one digit."""
    n = len(pieces)
    runs: list[tuple[int, int]] = []
    for i in range(n):
        for j in range(i + 1, min(n, i + MAX_PIECES) + 1):
            group = pieces[i:j]
            if not joinable(group, height):
                if j > i + 1 and width(group) > MAX_DIGIT_WIDTH * height:
                    end = stroke_end(pieces, i)
                    if end >= j:  # (never a run already: those end before j)
                        runs.append((i, end))  # one stroke may be one wide digit (a 7 drawn wider than tall)
                    break
                continue
            runs.append((i, j))
    return runs


def stroke_end(pieces: list[Piece], i: int) -> int:
    """j if pieces[i:j] are all the slices of one cut stroke (i its first); else i: a stroke too wide for one digit
    is still a candidate as a whole, however wide, where the model and the verifier decide."""
    host = pieces[i].component
    if not pieces[i].sliced or pieces[i].mark or (i > 0 and pieces[i - 1].component == host):
        return i
    j = i
    while j < len(pieces) and pieces[j].component == host:
        j += 1
    return j


def work(runs: list[tuple[int, int]], pieces: list[Piece]) -> float:
    """The work of reading these runs, in candidates (see `CROP_PIXELS`), from their boxes alone."""
    ext = [(int(p.ys.min()), int(p.ys.max()), int(p.xs.min()), int(p.xs.max())) for p in pieces]
    total = 0.0
    for i, j in runs:
        group = ext[i:j]
        rows = max(e[1] for e in group) - min(e[0] for e in group) + 7  # `segment._crop`'s box with its margin
        cols = max(e[3] for e in group) - min(e[2] for e in group) + 7
        total += 1.0 + rows * cols / CROP_PIXELS
    return total


def fewest_digits(runs: list[tuple[int, int]], pieces: list[Piece]) -> float:
    """The fewest runs that read all pieces (marks may be left out): no reading has fewer digits (none is
    dropped while `segment.DROP_BELOW` is 0), so more than `segment.MAX_DIGITS` is refused before the work. inf: none."""
    by_end: dict[int, list[int]] = {}
    for i, j in runs:
        by_end.setdefault(j, []).append(i)
    fewest = [0.0] + [math.inf] * len(pieces)
    for j in range(1, len(pieces) + 1):
        skip = fewest[j - 1] if pieces[j - 1].mark else math.inf
        fewest[j] = min([skip, *(fewest[i] + 1 for i in by_end.get(j, ()))])
    return fewest[-1]


def width(group: list[Piece]) -> float:
    return max(p.right for p in group) - min(p.left for p in group)
