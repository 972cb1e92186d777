"""Glyph tables: digit writing styles (the rare ones MNIST barely has included), letters and symbols.

One table per kind, used by every generator: `STYLES` (digits), `LETTERS`, `SYMBOLS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from digitlab.synth.shapes import Strokes, arc, build_stroke, closed_spline, segments, spline, uniform


def _s0_oval(r):
    start = uniform(r, 80, 120)
    return [[spline(*arc(0.3, 0.5, 0.3, 0.5, start, start + 360 + uniform(r, 5, 30)))]]


def _s0_narrow(r):
    start = uniform(r, 60, 100)
    return [[spline(*arc(0.2, 0.5, 0.2, 0.5, start, start - 360 - uniform(r, 0, 25)))]]


def _s1_stick(r):
    return [[spline((0.3, 0.0), (0.3 + uniform(r, -0.03, 0.03), 0.5), (0.3, 1.0))]]


def _s1_flag(r):
    return [[segments((0.3 - uniform(r, 0.12, 0.2), uniform(r, 0.12, 0.25)), (0.3, 0.0), (0.3, 1.0))]]


def _s1_long_flag(r):
    return [[segments((0.3 - uniform(r, 0.25, 0.35), uniform(r, 0.3, 0.45)), (0.3, 0.0), (0.3, 1.0))]]


def _s1_flag_base(r):
    base = uniform(r, 0.2, 0.3)
    return [
        [segments((0.3 - uniform(r, 0.22, 0.32), uniform(r, 0.28, 0.42)), (0.3, 0.0), (0.3, 1.0))],
        [segments((0.3 - base, 1.0), (0.3 + base, 1.0))],
    ]


def _s2_plain(r):
    return [
        [
            spline((0.02, 0.25), (0.22, 0.03), (0.45, 0.0), (0.66, 0.13), (0.64, 0.36), (0.35, 0.68), (0.03, 1.0)),
            segments((uniform(r, 0.6, 0.8), 0.99)),
        ]
    ]


def _s2_loop(r):
    # a curly 2: the diagonal runs into a loop at the bottom left, then the base goes right
    rad = uniform(r, 0.1, 0.15)
    cx, cy = 0.1 + rad, 1.0 - rad
    return [
        [
            spline((0.03, 0.22), (0.25, 0.01), (0.52, 0.03), (0.64, 0.26), (0.45, 0.55), (cx + 0.05, cy - rad - 0.1)),
            spline(*arc(cx, cy, rad * 1.2, rad, 150, 450, step=60), (cx + 0.3, 1.0)),
            segments((uniform(r, 0.65, 0.8), 0.98)),
        ]
    ]


def _s3_round(r):
    mid = (uniform(r, 0.25, 0.35), 0.47)
    return [
        [
            spline((0.03, 0.14), (0.28, 0.0), (0.55, 0.04), (0.62, 0.24), mid),
            spline((0.6, 0.58), (0.66, 0.8), (0.42, 1.0), (0.02, 0.88)),
        ]
    ]


def _s3_flat_top(r):
    return [
        [
            segments((0.05, 0.0), (0.65, 0.0), (0.28, 0.42)),
            spline((0.6, 0.55), (0.66, 0.8), (0.4, 1.0), (0.03, 0.88)),
        ]
    ]


def _s4_closed(r):
    x = uniform(r, 0.45, 0.55)
    bar = uniform(r, 0.6, 0.7)
    return [
        [segments((x, 0.0), (0.0, bar), (uniform(r, 0.7, 0.8), bar))],
        [segments((x + 0.02, 0.02), (x + 0.02, 1.0))],
    ]


def _s4_open(r):
    bar = uniform(r, 0.55, 0.68)
    x = uniform(r, 0.5, 0.6)
    return [
        [segments((uniform(r, 0.05, 0.18), 0.0), (0.02, bar), (uniform(r, 0.72, 0.85), bar))],
        [segments((x, uniform(r, 0.0, 0.12)), (x - 0.02, 1.0))],
    ]


def _belly(r):
    return spline((0.38, 0.37), (0.62, 0.48), (0.67, 0.74), (0.44, 0.98), (0.02, 0.9))


def _s5_plain(r):
    top = (0.15, 0.0)
    return [
        [segments(top, (0.11, 0.46)), _belly(r)],
        [segments(top, (uniform(r, 0.6, 0.72), 0.0))],
    ]


def _s5_onestroke(r):
    return [[segments((uniform(r, 0.6, 0.72), 0.0), (0.15, 0.0), (0.11, 0.46)), _belly(r)]]


def _s6_plain(r):
    return [
        [
            spline(
                (0.6, 0.02), (0.32, 0.15), (0.12, 0.48), (0.12, 0.8), (0.34, 1.0), (0.6, 0.88),
                (0.6, 0.63), (0.37, 0.52), (0.13, 0.66),
            )
        ]
    ]


def _s6_straight(r):
    return [
        [
            spline(
                (0.55, 0.0), (0.3, 0.3), (0.12, 0.66), (0.18, 0.93), (0.4, 1.0), (0.6, 0.83),
                (0.55, 0.6), (0.32, 0.56), (0.14, 0.7),
            )
        ]
    ]


def _s7_plain(r):
    start = [(0.0, uniform(r, 0.08, 0.15))] if r.random() < 0.3 else []
    return [[segments(*start, (0.0, 0.0), (0.65, 0.0)), segments((uniform(r, 0.2, 0.32), 1.0))]]


def _s7_crossbar(r):
    foot = uniform(r, 0.2, 0.3)
    mid = (0.65 + foot) / 2
    half = uniform(r, 0.16, 0.24)
    y = uniform(r, 0.45, 0.55)
    return [
        [segments((0.0, 0.0), (0.65, 0.0), (foot, 1.0))],
        [segments((mid - half, y + 0.02), (mid + half, y - 0.02))],
    ]


def _s7_curved_top(r):
    return [
        [
            spline((0.0, 0.14), (0.15, 0.03), (0.35, 0.07), (0.55, 0.06), (0.7, 0.0)),
            spline((0.5, 0.4), (0.37, 0.72), (0.3, 1.0)),
        ]
    ]


def _s8_onestroke(r):
    return [
        [
            spline(
                (0.58, 0.1), (0.33, 0.0), (0.09, 0.12), (0.14, 0.32), (0.35, 0.47), (0.6, 0.62),
                (0.64, 0.85), (0.38, 1.0), (0.1, 0.88), (0.11, 0.67), (0.35, 0.5), (0.55, 0.32), (0.58, 0.12),
            )
        ]
    ]


def _s8_two_loops(r):
    return [
        [closed_spline(*arc(0.33, 0.24, 0.22, 0.24, 90, 360, step=60)[:-1])],
        [closed_spline(*arc(0.33, 0.74, 0.28, 0.26, 90, 360, step=60)[:-1])],
    ]


def _loop9():
    return spline((0.62, 0.2), (0.4, 0.0), (0.12, 0.08), (0.08, 0.32), (0.33, 0.45), (0.58, 0.36), (0.63, 0.14))


def _s9_plain(r):
    return [[_loop9(), segments((uniform(r, 0.55, 0.65), 1.0))]]


def _s9_curled(r):
    return [[_loop9(), spline((0.63, 0.55), (0.56, 0.88), (0.38, 1.0), (0.18, 0.95), (0.1, 0.86))]]


def _s9_two_strokes(r):
    return [
        [closed_spline(*arc(0.33, 0.24, 0.3, 0.24, 0, 360, step=60)[:-1])],
        [segments((0.64, 0.12), (uniform(r, 0.55, 0.64), 1.0))],
    ]


#: style name -> (digit, number of strokes, template); rare-in-MNIST styles are marked in RARE_STYLES
STYLES: dict[str, tuple[int, int, Callable]] = {
    "0-oval": (0, 1, _s0_oval),
    "0-narrow": (0, 1, _s0_narrow),
    "1-stick": (1, 1, _s1_stick),
    "1-flag": (1, 1, _s1_flag),
    "1-long-flag": (1, 1, _s1_long_flag),
    "1-long-flag-base": (1, 2, _s1_flag_base),
    "2-plain": (2, 1, _s2_plain),
    "2-loop": (2, 1, _s2_loop),
    "3-round": (3, 1, _s3_round),
    "3-flat-top": (3, 1, _s3_flat_top),
    "4-closed": (4, 2, _s4_closed),
    "4-open": (4, 2, _s4_open),
    "5-plain": (5, 2, _s5_plain),
    "5-one-stroke": (5, 1, _s5_onestroke),
    "6-plain": (6, 1, _s6_plain),
    "6-straight": (6, 1, _s6_straight),
    "7-plain": (7, 1, _s7_plain),
    "7-crossbar": (7, 2, _s7_crossbar),
    "7-curved-top": (7, 1, _s7_curved_top),
    "8-one-stroke": (8, 1, _s8_onestroke),
    "8-two-loops": (8, 2, _s8_two_loops),
    "9-plain": (9, 1, _s9_plain),
    "9-curled-tail": (9, 1, _s9_curled),
    "9-two-strokes": (9, 2, _s9_two_strokes),
}
RARE_STYLES = ("1-long-flag", "1-long-flag-base", "2-loop", "4-open", "7-crossbar", "7-curved-top", "9-curled-tail")


def style_digit(
    digit: int,
    rng: np.random.Generator,
    *,
    style: str | None = None,
    noise: float = 0.022,
) -> Strokes:
    """Strokes of `digit` in a random (or the named) style, jittered: control points, slant, aspect.

    Coordinates are in a unit box (height ~1, y down). Rare styles are drawn as often as the
    ordinary ones of the same digit, so an evaluation or augmentation covers them.
    """
    if style is None:
        names = [n for n, (d, _, _) in STYLES.items() if d == digit]
        if not names:
            raise ValueError(f"digit must be 0-9, not {digit!r}")
        style = names[int(rng.integers(len(names)))]
    d, _, template = STYLES[style]
    if d != digit:
        raise ValueError(f"style {style!r} draws a {d}, not a {digit}")
    strokes = [build_stroke(pieces, rng, noise) for pieces in template(rng)]
    aspect = uniform(rng, 0.75, 1.25)
    slant = uniform(rng, -0.25, 0.3)  # x shift per unit of height, positive leans right
    out = []
    for s in strokes:
        s = s.copy()
        s[:, 0] = s[:, 0] * aspect + slant * (1.0 - s[:, 1])
        out.append(s)
    return out


def spiral(r=None):
    return [[spline(*[(0.5 + t / 12 * math.cos(t), 0.5 + t / 12 * math.sin(t)) for t in np.linspace(0.3, 6 * math.pi, 19)])]]


#: symbols and doodles that are not digits, as stroke templates (see `STYLES`)
SYMBOLS: dict[str, Callable[[np.random.Generator], list]] = {
    "#": lambda r: [[segments((0.25, 0), (0.15, 1))], [segments((0.65, 0), (0.55, 1))], [segments((0, 0.33), (0.8, 0.33))],
                  [segments((0, 0.67), (0.8, 0.67))]],
    "*": lambda r: [[segments((0.5, 0), (0.5, 1))], [segments((0.07, 0.25), (0.93, 0.75))], [segments((0.93, 0.25), (0.07, 0.75))]],
    "+": lambda r: [[segments((0.5, 0), (0.5, 1))], [segments((0, 0.5), (1, 0.5))]],
    "check": lambda r: [[segments((0, 0.6), (0.3, 1), (0.9, 0))]],
    "heart": lambda r: [[spline((0.5, 0.25), (0.3, 0.02), (0.05, 0.1), (0.05, 0.4), (0.5, 1.0)),
                       spline((0.95, 0.4), (0.95, 0.1), (0.7, 0.02), (0.5, 0.25))]],
    "triangle": lambda r: [[segments((0.5, 0), (1, 0.9), (0, 0.9), (0.5, 0))]],
    "square": lambda r: [[segments((0, 0), (0.9, 0.02), (0.88, 0.9), (0.02, 0.88), (0, 0))]],
    "star": lambda r: [[segments((0.2, 1), (0.5, 0), (0.8, 1), (0.02, 0.38), (0.98, 0.38), (0.2, 1))]],
    "spiral": spiral,
    "smiley": lambda r: [[closed_spline(*arc(0.5, 0.5, 0.5, 0.5, 0, 360, step=45)[:-1])], [segments((0.33, 0.33))], [segments((0.67, 0.33))],
                       [spline(*arc(0.5, 0.5, 0.3, 0.3, 200, 340, step=35))]],
    "loops": lambda r: [[spline(*[(0.25 * k + 0.15 * math.cos(t), 0.6 - 0.4 * math.sin(t))
                            for k in range(3) for t in np.linspace(-0.5 * math.pi, 1.5 * math.pi, 7)[:-1]])]],
    "infinity": lambda r: [[closed_spline(*[(0.5 + 0.5 * math.sin(t), 0.5 + 0.25 * math.sin(2 * t))
                               for t in np.linspace(0, 2 * math.pi, 13)[:-1]])]],
    "arrow": lambda r: [[segments((0, 0.5), (1, 0.5))], [segments((0.7, 0.2), (1, 0.5), (0.7, 0.8))]],
}

LETTERS: dict[str, Callable[[np.random.Generator], list]] = {
    "A": lambda r: [[segments((0, 1), (0.35, 0), (0.7, 1))], [segments((0.15, 0.6), (0.55, 0.6))]],
    "B": lambda r: [
        [
            segments((0, 1), (0, 0)),
            spline((0.35, 0.03), (0.45, 0.22), (0.02, 0.47)),
            spline((0.5, 0.62), (0.5, 0.9), (0.02, 1.0)),
        ]
    ],
    "C": lambda r: [[spline(*arc(0.5, 0.5, 0.5, 0.5, g := uniform(r, 35, 65), 360 - g, step=40))]],
    "D": lambda r: [[segments((0, 1), (0, 0)), spline((0.4, 0.05), (0.65, 0.5), (0.4, 0.95), (0.0, 1.0))]],
    "E": lambda r: [[segments((0.6, 0), (0, 0), (0, 1), (0.6, 1))], [segments((0, 0.5), (0.45, 0.5))]],
    "F": lambda r: [[segments((0.6, 0), (0, 0), (0, 1))], [segments((0, 0.48), (0.45, 0.48))]],
    "H": lambda r: [[segments((0, 0), (0, 1))], [segments((0.6, 0), (0.6, 1))], [segments((0, 0.5), (0.6, 0.5))]],
    "K": lambda r: [[segments((0, 0), (0, 1))], [segments((0.55, 0), (0.02, 0.55), (0.6, 1))]],
    "M": lambda r: [[segments((0, 1), (0.05, 0), (0.35, 0.6), (0.65, 0), (0.7, 1))]],
    "N": lambda r: [[segments((0, 1), (0, 0), (0.6, 1), (0.6, 0))]],
    "P": lambda r: [[segments((0, 1), (0, 0)), spline((0.35, 0.04), (0.48, 0.24), (0.3, 0.46), (0.0, 0.5))]],
    "R": lambda r: [
        [segments((0, 1), (0, 0)), spline((0.35, 0.05), (0.45, 0.25), (0.3, 0.45), (0.0, 0.5)), segments((0.5, 1))]
    ],
    "S": lambda r: [
        [
            spline(
                (0.62, 0.1),
                (0.35, 0.0),
                (0.06, 0.12),
                (0.12, 0.38),
                (0.5, 0.56),
                (0.64, 0.82),
                (0.36, 1.0),
                (0.0, 0.88),
            )
        ]
    ],
    "T": lambda r: [[segments((0, 0), (0.8, 0))], [segments((0.4, 0), (0.4, 1))]],
    "U": lambda r: [[segments((0, 0), (0, 0.65)), spline((0.15, 0.95), (0.45, 0.95), (0.6, 0.65)), segments((0.6, 0))]],
    "V": lambda r: [[segments((0, 0), (0.35, 1), (0.7, 0))]],
    "W": lambda r: [[segments((0, 0), (0.2, 1), (0.4, 0.3), (0.6, 1), (0.8, 0))]],
    "X": lambda r: [[segments((0, 0), (0.7, 1))], [segments((0.7, 0), (0, 1))]],
    "Y": lambda r: [[segments((0, 0), (0.35, 0.5), (0.7, 0))], [segments((0.35, 0.5), (0.35, 1))]],
    "Z": lambda r: [[segments((0, 0), (0.65, 0), (0, 1), (0.7, 1))], [segments((0.12, 0.52), (0.55, 0.48))]],  # crossed Z
    "L": lambda r: [[segments((0, 0), (0, 1), (0.6, 1))]],
}
#: letters whose plain form is close to a digit get a lower weight (S ~ 5, B ~ 8, C ~ an open 0, D ~ 0)
LETTER_WEIGHTS = {k: (0.4 if k in "SBCD" else 1.0) for k in LETTERS}
