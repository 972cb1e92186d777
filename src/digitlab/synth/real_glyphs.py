"""Digit styles seen in real handwriting that `glyphs.STYLES` lacks (training only).

Found by reading the mistakes on held-out real handwriting (`digitlab evaluate --real`, docs/real.md):
a 4 drawn in one stroke with an open top, a 7 whose crossbar sits low or whose top starts with a
hook, a 9 whose loop stays open or whose tail hooks left (read as 3), a 1 with a long flag and a
slanted stem but no base (read as 7 or 4), a 6 with an open loop, a slashed 0, a seriffed 1. They are
kept apart from `STYLES` so `evaluate --drawn` keeps its published set; `training.coverage` mixes
both tables into the training drawings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digitlab.synth.glyphs import STYLES, style_digit
from digitlab.synth.shapes import Strokes, arc, build_stroke, closed_spline, segments, spline, uniform


def _s1_slanted_flag(r):
    top = (0.45, 0.0)
    return [[segments((top[0] - uniform(r, 0.25, 0.38), uniform(r, 0.35, 0.55)), top, (uniform(r, 0.1, 0.25), 1.0))]]


def _s1_serif(r):
    return [[segments((0.3 - uniform(r, 0.1, 0.18), uniform(r, 0.1, 0.2)), (0.3, 0.0), (0.3, 1.0))],
            [segments((0.3 - uniform(r, 0.12, 0.2), 1.0), (0.3 + uniform(r, 0.12, 0.2), 1.0))]]


def _s4_one_stroke(r):
    bar, x = uniform(r, 0.5, 0.68), uniform(r, 0.5, 0.62)
    return [[segments((uniform(r, 0.05, 0.2), 0.0), (0.02, bar), (uniform(r, 0.72, 0.85), bar - 0.02)),
             segments((x, bar - uniform(r, 0.2, 0.4)), (x - 0.03, 1.0))]]


def _s4_bolt(r):
    bar = uniform(r, 0.5, 0.65)
    return [[segments((uniform(r, 0.4, 0.55), 0.0), (0.0, bar), (uniform(r, 0.65, 0.8), bar)),
             spline((uniform(r, 0.5, 0.6), bar + 0.15), (uniform(r, 0.4, 0.5), 1.0))]]


def _s7_low_crossbar(r):
    foot = uniform(r, 0.15, 0.3)
    y = uniform(r, 0.58, 0.72)
    x = 0.65 + (foot - 0.65) * y
    half = uniform(r, 0.14, 0.22)
    return [[segments((0.0, 0.0), (0.65, 0.0), (foot, 1.0))], [segments((x - half, y + 0.02), (x + half, y - 0.02))]]


def _s7_hook(r):
    return [[segments((uniform(r, 0.0, 0.08), uniform(r, 0.18, 0.3)), (0.0, 0.0), (0.65, 0.0)),
             spline((0.45, 0.45), (uniform(r, 0.2, 0.32), 1.0))]]


def _s9_open_loop(r):
    a0 = uniform(r, 20, 45)
    return [[spline(*arc(0.33, 0.24, 0.3, 0.24, a0, a0 + uniform(r, 250, 300), step=50)),
             segments((0.63, 0.2), (uniform(r, 0.5, 0.62), 1.0))]]


def _s9_hooked_tail(r):
    return [[closed_spline(*arc(0.33, 0.24, 0.3, 0.24, 0, 360, step=60)[:-1])],
            [spline((0.63, 0.15), (0.62, 0.6), (0.5, 0.95), (0.3, 1.0), (uniform(r, 0.05, 0.18), uniform(r, 0.8, 0.9)))]]


def _s6_open_loop(r):
    return [[spline((0.6, 0.02), (0.3, 0.18), (0.12, 0.5), (0.12, 0.82), (0.35, 1.0), (0.6, 0.88), (0.58, 0.65),
                    (0.4, uniform(r, 0.55, 0.6)))]]


def _s0_slashed(r):
    start = uniform(r, 80, 120)
    return [[spline(*arc(0.3, 0.5, 0.3, 0.5, start, start + 370))],
            [segments((uniform(r, 0.5, 0.7), -0.05), (uniform(r, -0.1, 0.1), 1.05))]]


#: style name -> (digit, number of strokes, template), like `glyphs.STYLES`
REAL_STYLES: dict[str, tuple[int, int, Callable]] = {
    "0-slashed": (0, 2, _s0_slashed),
    "1-slanted-flag": (1, 1, _s1_slanted_flag),
    "1-serif": (1, 2, _s1_serif),
    "4-one-stroke": (4, 1, _s4_one_stroke),
    "4-bolt": (4, 1, _s4_bolt),
    "6-open-loop": (6, 1, _s6_open_loop),
    "7-low-crossbar": (7, 2, _s7_low_crossbar),
    "7-hook": (7, 1, _s7_hook),
    "9-open-loop": (9, 1, _s9_open_loop),
    "9-hooked-tail": (9, 2, _s9_hooked_tail),
}


def any_style_digit(digit: int, rng: np.random.Generator, style: str) -> Strokes:
    """Strokes of `digit` in a style of either table, jittered like `glyphs.style_digit`."""
    if style in STYLES:
        return style_digit(digit, rng, style=style)
    d, _, template = REAL_STYLES[style]
    if d != digit:
        raise ValueError(f"style {style!r} draws a {d}, not a {digit}")
    strokes = [build_stroke(pieces, rng, 0.022) for pieces in template(rng)]
    aspect, slant = uniform(rng, 0.75, 1.25), uniform(rng, -0.25, 0.3)
    return [np.c_[s[:, 0] * aspect + slant * (1.0 - s[:, 1]), s[:, 1]] for s in strokes]
