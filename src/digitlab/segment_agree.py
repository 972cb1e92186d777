"""The segmentation's reading of a number, checked against the line reader's (`line_reader`).

`segment` picks the best-scoring way to cut the ink into digits; the line reader reads the whole line without
cutting. Where they disagree (mostly digits that touch or overlap), the segmentation's candidates are searched
again for the best reading of exactly the line reader's text (`reading_of`): if there is one, whichever of the
two readings scores better, each by the segmentation's score plus `AGREE_WEIGHT` times the line reader's log
probability of its text, wins. Where both readings cut the ink into the same candidates and differ only in what
digit one is, the weight is `RELABEL_WEIGHT`: the model, trained on far more single digits, reads a digit better
than the line reader, which overruled it where the model was sure ("45" read "95", the model at 0.92 for the 4).
Chosen on calibration numbers per source (1,000 each, seeds 400 + 500), 3 -> 0.5: Semeion's writers 879 -> 906
read right, USPS 961 -> 959 (0: 897 / 944; 0.25: 904 / 954; Semeion at 1: 892, at 1.5: 884); the mixed calibration
set (seeds 200 + 300, nine in ten digits USPS) 950 -> 946. Scoring each digit from either reader where several
differ was no better (906 / 959; 945). The digits of a reading the two still disagree on are flagged "not sure" where
the line reader's text differs (`unmatched`). A reading of one digit is only flagged, not changed, unless the
line reader reads two digits or more there with P >= SURE_ABOVE: the model that reads single digits knows them
better (Semeion's digits stretched square on the canvas: 95.2 -> 91.5 % right when the line reader could change
them, a wide 1 read "11", "7" or "41"), but two overlapping digits merged into one were lost ("21" read "2": of
1,000 calibration numbers 2 more read right; 1,200 real single digits on the canvas read the same). Where the line reader reads the
very text chosen, surely (`SURE_ABOVE`), a digit is not "not sure" for its model's confidence alone, nor for
being the model's second choice (the marks, shapes and layout that make a digit "not sure" still do): of 1,000
calibration numbers, right ones flagged 173 -> 157 of 929, wrong ones not flagged 16 of 71 before and after.
Where the line reader reads a text surely (`SURE_ABOVE`) that no run of candidates gives at all (two digits
overlapping in one stroke the cuts cannot part, "12" read "0"), the ink is cut where it sees each digit
(`line_pieces`) and read as its text: of 1,000 calibration numbers 942 -> 949 read right (7 changed, all to
right); 1,200 real single digits on the canvas 1,179 -> 1,182 right.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np

from digitlab.line_reader import best_text, digit_frames, frame_columns, text_log_probability
from digitlab.segment_pieces import Piece

#: weight of the line reader's log P(text) against the segmentation's score (chosen on the calibration numbers)
AGREE_WEIGHT = 3.0
#: ...where both readings cut the ink the same way and differ only in digits: the model knows single digits better
RELABEL_WEIGHT = 0.5
MAX_DIGITS = 32  #: the longest text searched for (`segment.MAX_DIGITS`)


#: the line reader reads the same text with at least this probability: the digits' confidence is not doubted
SURE_ABOVE = 0.99


class Agreed(NamedTuple):
    chosen: list[int]  # candidates, left to right
    skipped: list[int]  # marks left out
    digits: list[int]  # the digit each chosen candidate is read as
    disagree: list[bool]  # per chosen candidate: the line reader's text has no such digit there
    sure: bool = False  # the line reader reads this very text with P >= SURE_ABOVE
    unformed: str = ""  # the line reader's text, read surely, that no run of candidates gives (`line_pieces`)


def unmatched(ours: str, theirs: str) -> list[bool]:
    """Per character of `ours`: left out of a best alignment with `theirs` (fewest edits), or replaced there.
    "427" against "42" flags only the 7 (the "?" of "42?", which the line reader, knowing digits only, skips)."""
    n, m = len(ours), len(theirs)
    cost = np.zeros((n + 1, m + 1), int)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + (ours[i - 1] != theirs[j - 1]))
    flags = [True] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (ours[i - 1] != theirs[j - 1]):
            flags[i - 1] = ours[i - 1] != theirs[j - 1]
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return flags


def reading_of(
    text: str, spans: list[tuple[int, int]], scores: np.ndarray, proba: np.ndarray, marks: list[bool]
) -> tuple[float, list[int], list[int]] | None:
    """The best reading of all pieces as exactly `text` (each candidate scored as that digit instead of its
    most probable one): (score, candidates, skipped marks), or None if no run of candidates gives it."""
    n, length = len(marks), len(text)
    if length > min(n, MAX_DIGITS):  # each digit takes at least one piece (and a scrawl's 300 "digits": no search)
        return None
    best = np.full((n + 1, length + 1), -np.inf)
    best[0, 0] = 0.0
    back: dict[tuple[int, int], tuple[int, int, int]] = {}
    ending: dict[int, list[int]] = {}
    for k, (_, j) in enumerate(spans):
        ending.setdefault(j, []).append(k)
    as_read = scores - np.log(np.maximum(proba.max(axis=1), 1e-6))
    for j in range(1, n + 1):
        for m in range(length + 1):
            if marks[j - 1] and best[j - 1, m] > best[j, m]:
                best[j, m], back[j, m] = best[j - 1, m], (j - 1, m, -1)
            if m == 0:
                continue
            digit = int(text[m - 1])
            for k in ending.get(j, []):
                i = spans[k][0]
                value = best[i, m - 1] + as_read[k] + np.log(max(proba[k, digit], 1e-6))
                if value > best[j, m]:
                    best[j, m], back[j, m] = value, (i, m - 1, k)
    if not np.isfinite(best[n, length]):
        return None
    chosen, skipped = [], []
    j, m = n, length
    while j > 0:
        i, m_before, k = back[j, m]
        (chosen if k >= 0 else skipped).append(k if k >= 0 else i)
        j, m = i, m_before
    return float(best[n, length]), chosen[::-1], skipped[::-1]


def agree(
    frames: np.ndarray,
    spans: list[tuple[int, int]],
    scores: np.ndarray,
    proba: np.ndarray,
    marks: list[bool],
    chosen: list[int],
    skipped: list[int],
) -> Agreed:
    """The segmentation's best reading (`chosen`, `skipped`) or the best one of the line reader's text, as
    the module docstring says; `frames`: the line reader's log-probabilities of the working ink."""
    digits = [int(proba[k].argmax()) for k in chosen]
    ours = "".join(map(str, digits))
    theirs = best_text(frames)
    log_p = functools.cache(lambda text: text_log_probability(frames, text))  # each text's forward pass once
    if ours == theirs:
        sure = np.exp(log_p(ours)) >= SURE_ABOVE
        return Agreed(chosen, skipped, digits, [False] * len(chosen), bool(sure))
    if len(chosen) == 1 and not (len(theirs) > 1 and np.exp(log_p(theirs)) >= SURE_ABOVE):
        return Agreed(chosen, skipped, digits, unmatched(ours, theirs))  # one digit: its model knows it better
    other = reading_of(theirs, spans, scores, proba, marks) if theirs else None
    if other is not None:
        score, other_chosen, other_skipped = other
        weight = RELABEL_WEIGHT if other_chosen == chosen else AGREE_WEIGHT  # the same cuts: only digits differ
        if score + weight * log_p(theirs) > float(scores[chosen].sum()) + weight * log_p(ours):
            sure = np.exp(log_p(theirs)) >= SURE_ABOVE
            return Agreed(other_chosen, other_skipped, [int(ch) for ch in theirs], [False] * len(other_chosen), bool(sure))
    elif 0 < len(theirs) <= MAX_DIGITS and np.exp(log_p(theirs)) >= SURE_ABOVE:
        return Agreed(chosen, skipped, digits, unmatched(ours, theirs), unformed=theirs)
    return Agreed(chosen, skipped, digits, unmatched(ours, theirs))


def line_pieces(frames: np.ndarray, text: str, pieces: list[Piece], ink: np.ndarray) -> list[Piece]:
    """The ink cut into one piece per digit of the line reader's `text`, where no run of the segmentation's
    candidates gives it (two overlapping digits in one stroke, "12" read "0"): each cut at the emptiest slanted
    column between two digits' frames on the most probable CTC path (`line_reader.digit_frames`). Empty list
    where a digit would get no ink."""
    strokes = [p for p in pieces if not p.mark] or pieces
    ys, xs = np.concatenate([p.ys for p in pieces]), np.concatenate([p.xs for p in pieces])
    shear, yc = pieces[0].shear, 0.5 * (ink.shape[0] - 1)
    xp = xs - shear * (ys - yc)
    middle = 0.5 * (min(int(p.ys.min()) for p in strokes) + max(int(p.ys.max()) for p in strokes))
    at = frame_columns(ink, np.shape(frames)[-2]) - shear * (middle - yc)
    spans = digit_frames(frames, text)
    left = int(np.floor(xp.min()))
    column_ink = np.bincount((xp - left).astype(int))
    bounds = [-np.inf]
    for (_, end), (start, _) in itertools.pairwise(spans):
        a, b = sorted((round(float(at[end]) - left), round(float(at[start]) - left)))
        a, b = max(a, 0), min(max(b, a + 1), len(column_ink))
        bounds.append(left + a + int(np.argmin(column_ink[a:b])) + 0.5 if b > a else left + a + 0.5)
    bounds.append(np.inf)
    out = []
    for k in range(len(text)):
        sel = (xp >= bounds[k]) & (xp < bounds[k + 1])
        if not sel.any():
            return []
        out.append(Piece(ys[sel], xs[sel], float(xp[sel].min()), float(xp[sel].max()) + 1.0, k,
                         cut_left=k > 0, sliced=True, shear=shear))  # fmt: skip
    return out
