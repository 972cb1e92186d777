"""What a drawing's ink tells the Draw page's advice when the model is not sure: is it several shapes side by
side (a whole number, "12", which the Number page reads), or one shape (a digit drawn oddly, a smiley, a #)?
Was it drawn small (`drawn_small`)? And when nothing was found: was the pen the colour of the background
(`nothing_drawn`)?

The strokes are the Number reader's own (`segment_pieces.pieces_of`: ink at least `INK_ON`, specks dropped,
dots and dashes far lower than the writing are *marks*), grouped as it joins strokes into one digit: strokes
that overlap horizontally, or nearly touch, are one shape (a 4 in two strokes, a 5's top, a smiley's eyes
inside its face). Marks never make a shape of their own.
"""

from __future__ import annotations

import math
from functools import lru_cache

#: strokes at most this far apart (in writing heights) are one shape (`segment_runs.JOIN_GAP`: a 0 in two strokes)
JOIN_GAP = 0.05


@lru_cache(maxsize=64)
def _ink(png: bytes, pen_color: str | None, background_color: str | None):
    """The drawing's ink map (as the preprocessing sees it), None for an image that cannot be read: decoded once
    for both questions asked of an unsure drawing (`shapes_side_by_side`, `drawn_small`)."""
    from digitlab.decode import decode_image  # (numpy and scipy: only once a drawing needs advice)
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import ink_map

    try:
        return ink_map(decode_image(png), pen_color=pen_color, background_color=background_color)
    except (DigitlabError, ValueError):
        return None


@lru_cache(maxsize=64)
def shapes_side_by_side(png: bytes, pen_color: str | None = None, background_color: str | None = None) -> int:
    """How many shapes stand side by side in the picture (0: no ink, or an image that cannot be read)."""
    from digitlab.errors import DigitlabError
    from digitlab.segment_pieces import pieces_of

    ink = _ink(png, pen_color, background_color)
    if ink is None:
        return 0
    try:
        pieces, height, _ = pieces_of(ink)
    except (DigitlabError, ValueError):
        return 0
    spans: dict[int, tuple[float, float]] = {}  # stroke -> its extent (a cut stroke's slices together)
    for piece in pieces:
        if not piece.mark:
            left, right = spans.get(piece.component, (piece.left, piece.right))
            spans[piece.component] = (min(left, piece.left), max(right, piece.right))
    shapes, reach = 0, float("-inf")
    for left, right in sorted(spans.values()):
        if left > reach + JOIN_GAP * height:
            shapes += 1
        reach = max(reach, right)
    return shapes


def several_digits(
    png: bytes | None, pen_color: str | None = None, background_color: str | None = None
) -> bool:
    """The drawing looks like several digits side by side (a whole number), as far as its ink can tell."""
    return bool(png) and shapes_side_by_side(png, pen_color, background_color) >= 2


#: a drawing whose ink spans less than this share of the canvas (its longer side) is "small"
SMALL_SHARE = 0.3


@lru_cache(maxsize=64)
def drawn_small(png: bytes | None, pen_color: str | None = None, background_color: str | None = None) -> bool:
    """The ink spans less than `SMALL_SHARE` of the canvas: at the canvas's one pen width a small digit is a
    blob (a 3 in a corner was asked "an 8 or a 1?" where it wanted drawing larger; a newcomer's tour)."""
    import numpy as np

    ink = _ink(png, pen_color, background_color) if png else None
    if ink is None:
        return False
    inked = ink >= 0.5
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    if not len(rows):
        return False
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return extent < SMALL_SHARE * max(inked.shape)


#: pen and background closer than this (RGB distance) hardly differ on screen, nor to the preprocessing
#: (`preprocess.MIN_CONTRAST` is 40)
PEN_CONTRAST = 60.0


def nothing_drawn(drawing, advice: str = "Nothing to recognise yet: draw a larger digit.") -> str:
    """What to say when nothing was found on the canvas: a pen the colour of the background (#111 on #000)
    was told to "draw a larger digit" over a 4 that filled the canvas."""
    try:
        pen, bg = ([int(c.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
                   for c in (drawing.pen_color, drawing.background_color))  # fmt: skip
    except (AttributeError, TypeError, ValueError):
        return advice
    if math.dist(pen, bg) < PEN_CONTRAST:
        return ("Your pen is nearly the colour of the background, so nothing stands out: pick a pen colour that "
                "differs clearly from it (Pen).")
    return advice
