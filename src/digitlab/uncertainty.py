"""Unsure answers: is a drawing a digit at all, and is the model sure about it?

A classifier always answers one of ten digits, even for a scribble, a letter or "42". This module
adds a small, model-agnostic **not-a-digit detector** that looks at the preprocessed 28x28 image
(the same `preprocess.to_mnist` output the models see) and a decision rule per model:

    uncertain = p_not_digit > t_detector  or  max_proba < t_model[model_name]

The detector is a small multilayer perceptron on shape features (deskewed pixels, gradient
histograms of the deskewed and of the raw image, a few shape statistics), evaluated in plain
numpy (no pickle: its weights are an `.npz` read with `allow_pickle=False`, after its SHA-256 is
checked against `detector.json`). It is trained on drawings rendered by `digitlab.drawn` exactly
like the evaluation (render -> PNG bytes -> `to_mnist`): MNIST *training* digits traced into pen
strokes plus style templates (positives), and many kinds of non-digits (negatives, `NEGATIVE_KINDS`).
The thresholds are chosen on a separate validation set and stored in the manifest.

See docs/uncertainty.md for the data, the threshold choice and the measured rates.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab import drawn
from digitlab.drawn import _L, _S, _arc, _build_stroke, _catmull_rom, _polyline

__all__ = [
    "DEFAULT_T_MODEL_KEY",
    "DETECTOR_NAME",
    "DETECTOR_SHARE",
    "MODEL_SHARE",
    "NEGATIVE_KINDS",
    "N_FEATURES",
    "UncertaintyDetector",
    "calibrate",
    "choose_thresholds",
    "detector_features",
    "flag_rates",
    "load_detector",
    "negative_strokes",
    "pen_variation",
    "recalibrate",
    "render_negatives",
    "render_positives",
    "train_detector",
    "train_detector_command",
    "uncertainty_rates",
    "validation_set",
]

DETECTOR_NAME = "detector"
NOT_DIGIT = 10  #: class index of "not a digit" in the training labels (0-9 are digits)

# ================================================================================================
# Non-digit shapes (negatives). Coordinates: (x, y) in a unit box, y down; `render` rescales.
# ================================================================================================


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _angle_from_vertical(stroke: np.ndarray) -> float:
    d = stroke[-1] - stroke[0]
    return math.degrees(math.atan2(abs(float(d[0])), abs(float(d[1])) + 1e-12))


def _neg_polyline(rng):
    """1-5 strokes of straight segments through random points (no lone near-vertical line: a 1)."""
    n = int(rng.integers(1, 6))
    strokes = []
    for _ in range(n):
        k = int(rng.integers(2, 7))
        strokes.append(_polyline(rng.random((k, 2)) * (_u(rng, 0.4, 1.6), 1.0)))
    if n == 1 and len(strokes[0]) and _is_line(strokes[0]) and _angle_from_vertical(strokes[0]) < 55:
        strokes.append(_polyline(rng.random((3, 2))))
    return strokes


def _is_line(stroke: np.ndarray) -> bool:
    a, b = stroke[0], stroke[-1]
    d = b - a
    n = float(np.hypot(*d))
    if n < 1e-9:
        return True
    off = np.abs(d[0] * (stroke[:, 1] - a[1]) - d[1] * (stroke[:, 0] - a[0])) / n
    return float(off.max()) < 0.08 * n


def _bezier(ctrl: np.ndarray, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = ctrl
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _neg_bezier(rng):
    """1-4 random cubic Bezier curves, some chained into a longer stroke."""
    strokes = []
    for _ in range(int(rng.integers(1, 5))):
        pieces = [_bezier(rng.random((4, 2)) * (_u(rng, 0.5, 1.5), 1.0))]
        for _ in range(int(rng.integers(0, 3))):
            start = pieces[-1][-1]
            ctrl = np.vstack([start, rng.random((3, 2)) * (_u(rng, 0.5, 1.5), 1.0)])
            pieces.append(_bezier(ctrl)[1:])
        strokes.append(np.vstack(pieces))
    return strokes


def _neg_curves(rng):
    """1-5 smooth curves through 3-9 random points (like a person doodling)."""
    return [
        _catmull_rom(rng.random((int(rng.integers(3, 10)), 2)) * (_u(rng, 0.4, 1.6), 1.0))
        for _ in range(int(rng.integers(1, 6)))
    ]


def _neg_walk(rng):
    """1-3 smooth random walks: the heading drifts, sometimes sharply."""
    strokes = []
    for _ in range(int(rng.integers(1, 4))):
        steps = int(rng.integers(20, 90))
        turn = rng.normal(0, _u(rng, 0.1, 0.6), steps)
        turn = np.convolve(turn, np.ones(3) / 3, mode="same") + _u(rng, -0.15, 0.15)
        heading = _u(rng, 0, 2 * math.pi) + np.cumsum(turn)
        step = _u(rng, 0.02, 0.05)
        p = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * step, axis=0)
        strokes.append(p + rng.random(2))
    return strokes


def _neg_scrawl(rng):
    """Dense scrawls: many random points in one stroke, tight zig-zags, a coil of loops."""
    v = int(rng.integers(3))
    if v == 0:
        return [_catmull_rom(rng.random((int(rng.integers(10, 30)), 2)) * (_u(rng, 0.6, 1.6), 1.0))]
    if v == 1:
        teeth = int(rng.integers(6, 20))
        x = np.sort(rng.random(2 * teeth + 1)) * _u(rng, 0.6, 2.0)
        y = np.where(np.arange(2 * teeth + 1) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.15, 2 * teeth + 1)
        s = _polyline(np.stack([x, y], 1))
        return [s[:, ::-1] if rng.random() < 0.4 else s]
    loops = int(rng.integers(3, 9))
    t = np.linspace(0, 2 * math.pi * loops, 40 * loops)
    r = _u(rng, 0.25, 0.5)
    drift = np.linspace(0, _u(rng, 0.8, 2.5), len(t))
    s = np.stack([drift + r * np.cos(t), r * np.sin(t) * _u(rng, 0.7, 1.4)], 1)
    return [s]


def _neg_spiral(rng):
    turns = _u(rng, 1.6, 4.0)
    t = np.linspace(0, 2 * math.pi * turns, int(60 * turns))
    r = 0.05 + t / t[-1] * 0.5
    sign = 1 if rng.random() < 0.5 else -1
    a0 = _u(rng, 0, 2 * math.pi)
    s = np.stack([r * np.cos(sign * t + a0) * _u(rng, 0.7, 1.3), r * np.sin(sign * t + a0)], 1)
    return [s[::-1] if rng.random() < 0.5 else s]


def _neg_grid(rng):
    """Hash signs, tic-tac-toe grids, ladders: 2-4 lines one way, 2-4 the other."""
    strokes = []
    nh, nv = int(rng.integers(2, 5)), int(rng.integers(1 if rng.random() < 0.3 else 2, 5))
    for y in np.sort(rng.uniform(0.1, 0.9, nh)):
        strokes.append(
            _polyline(
                np.array(
                    [
                        [_u(rng, -0.05, 0.15), y + rng.normal(0, 0.03)],
                        [_u(rng, 0.85, 1.05), y + rng.normal(0, 0.03)],
                    ]
                )
            )
        )
    for x in np.sort(rng.uniform(0.1, 0.9, nv)):
        strokes.append(
            _polyline(
                np.array(
                    [
                        [x + rng.normal(0, 0.03), _u(rng, -0.05, 0.15)],
                        [x + rng.normal(0, 0.03), _u(rng, 0.85, 1.05)],
                    ]
                )
            )
        )
    return strokes


def _neg_star(rng):
    v = int(rng.integers(3))
    if v == 0:  # five-pointed star, one stroke
        ang = np.radians(90 + 144 * np.arange(6)) + _u(rng, -0.2, 0.2)
        return [_polyline(np.stack([0.5 + 0.5 * np.cos(ang), 0.5 - 0.5 * np.sin(ang)], 1))]
    if v == 1:  # asterisk: 3-4 lines through the centre
        k = int(rng.integers(3, 5))
        a0 = _u(rng, 0, math.pi)
        return [
            _polyline(
                np.array(
                    [
                        [0.5 - 0.5 * math.cos(a), 0.5 - 0.5 * math.sin(a)],
                        [0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)],
                    ]
                )
            )
            for a in a0 + np.arange(k) * math.pi / k
        ]
    # sun / flower: a small ring with rays, or petals
    rays = int(rng.integers(5, 10))
    strokes = [
        _catmull_rom(np.stack([0.5 + 0.2 * np.cos(t), 0.5 + 0.2 * np.sin(t)], 1), closed=True)
        for t in [np.linspace(0, 2 * math.pi, 9)[:-1]]
    ]
    for a in np.linspace(0, 2 * math.pi, rays, endpoint=False) + _u(rng, 0, 1):
        strokes.append(
            _polyline(
                np.array(
                    [
                        [0.5 + 0.28 * math.cos(a), 0.5 + 0.28 * math.sin(a)],
                        [0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)],
                    ]
                )
            )
        )
    return strokes


def _neg_filled(rng):
    """A filled-in area: hatching back and forth, or a shape scribbled over in loops."""
    if rng.random() < 0.5:
        n = int(rng.integers(7, 22))
        t = np.linspace(0, 1, n)
        w = _u(rng, 0.4, 1.4)
        shape = rng.integers(3)
        if shape == 0:  # rectangle
            half = np.full(n, w / 2)
        elif shape == 1:  # ellipse
            half = w / 2 * np.sqrt(np.clip(1 - (2 * t - 1) ** 2, 0.05, 1))
        else:  # triangle
            half = w / 2 * (0.1 + 0.9 * t)
        xs = np.where(np.arange(n) % 2 == 0, -half, half) + rng.normal(0, 0.03, n)
        pts = np.stack([xs, t], 1)
        s = _polyline(pts) if rng.random() < 0.5 else _catmull_rom(pts)
        return [s if rng.random() < 0.5 else s[:, ::-1]]
    loops = int(rng.integers(4, 10))
    t = np.linspace(0, 2 * math.pi * loops, 30 * loops)
    r = 0.5 * (0.4 + 0.6 * rng.random(len(t)).cumsum() / len(t))
    r = r + np.convolve(rng.normal(0, 0.05, len(t)), np.ones(9) / 9, mode="same")
    return [np.stack([r * np.cos(t) * _u(rng, 0.7, 1.3), r * np.sin(t)], 1)]


def _neg_shape(rng):
    """Geometric shapes and symbols that are not digits."""
    name = _SHAPES[int(rng.integers(len(_SHAPES)))]
    if name == "triangle":
        pts = np.array([[0.5, 0], [1, 0.9], [0, 0.9], [0.5, 0]]) + rng.normal(0, 0.03, (4, 2))
        return [_polyline(pts)]
    if name == "rectangle":
        w = _u(rng, 0.6, 2.5)
        return [
            _polyline(np.array([[0, 0], [w, 0.02], [w, 1], [0.02, 1], [0, 0]]) + rng.normal(0, 0.02, (5, 2)))
        ]
    if name == "diamond":
        return [
            _polyline(
                np.array([[0.5, 0], [1, 0.5], [0.5, 1], [0, 0.5], [0.5, 0]]) + rng.normal(0, 0.03, (5, 2))
            )
        ]
    if name == "wave":
        periods = _u(rng, 1.3, 4.0)
        x = np.linspace(0, periods, int(40 * periods))
        return [np.stack([x, 0.25 * np.sin(2 * math.pi * x)], 1)]
    if name == "house":
        return [_polyline(np.array([[0, 0.4], [0, 1], [0.8, 1], [0.8, 0.4], [0, 0.4], [0.4, 0], [0.8, 0.4]]))]
    if name == "arrow":
        a = [[0, 0.5], [1, 0.5]]
        return [_polyline(np.array(a)), _polyline(np.array([[0.7, 0.2], [1, 0.5], [0.7, 0.8]]))]
    if name == "heart":
        return [_build_stroke(drawn._LETTERS["heart"]()[0], rng, 0.02)]
    if name == "smiley":
        return [_build_stroke(p, rng, 0.02) for p in drawn._LETTERS["smiley"]()]
    if name == "eee":  # cursive loops "eeee" / "llll"
        k = int(rng.integers(3, 7))
        t = np.linspace(-0.5 * math.pi, (2 * k - 0.5) * math.pi, 40 * k)
        tall = _u(rng, 0.3, 1.0)
        return [np.stack([t / (2 * math.pi) * 0.5 + 0.18 * np.cos(t), tall * (0.5 - 0.5 * np.sin(t))], 1)]
    if name == "mmm":  # cursive humps
        k = int(rng.integers(3, 8))
        x = np.linspace(0, k, 30 * k)
        return [np.stack([x * 0.3, 1 - np.abs(np.sin(math.pi * x))], 1)]
    if name == "equals":
        return [_polyline(np.array([[0, 0.35], [1, 0.35]])), _polyline(np.array([[0, 0.65], [1, 0.65]]))]
    if name == "percent":
        ring = np.linspace(0, 2 * math.pi, 9)[:-1]
        c1 = _catmull_rom(np.stack([0.2 + 0.15 * np.cos(ring), 0.2 + 0.15 * np.sin(ring)], 1), closed=True)
        c2 = _catmull_rom(np.stack([0.8 + 0.15 * np.cos(ring), 0.8 + 0.15 * np.sin(ring)], 1), closed=True)
        return [c1, _polyline(np.array([[0.9, 0], [0.1, 1]])), c2]
    if name == "at":
        t = np.linspace(0, 2 * math.pi, 9)[:-1]
        inner = _catmull_rom(np.stack([0.5 + 0.18 * np.cos(t), 0.5 + 0.2 * np.sin(t)], 1), closed=True)
        outer = np.stack(
            [
                0.5 + 0.5 * np.cos(np.linspace(0, 1.8 * math.pi, 60)),
                0.5 + 0.5 * np.sin(np.linspace(0, 1.8 * math.pi, 60)),
            ],
            1,
        )
        return [inner, np.vstack([[0.68, 0.3], [0.68, 0.68], [0.85, 0.72], outer[::-1]])]
    if name == "cross":  # plus sign or x
        if rng.random() < 0.5:
            return [_polyline(np.array([[0.5, 0], [0.5, 1]])), _polyline(np.array([[0, 0.5], [1, 0.5]]))]
        return [_polyline(np.array([[0, 0], [1, 1]])), _polyline(np.array([[1, 0], [0, 1]]))]
    if name == "check":
        return [_polyline(np.array([[0, 0.6], [0.3, 1], [0.9, 0]]) + rng.normal(0, 0.03, (3, 2)))]
    raise AssertionError(name)


_SHAPES = (
    "triangle",
    "rectangle",
    "diamond",
    "wave",
    "house",
    "arrow",
    "heart",
    "smiley",
    "eee",
    "mmm",
    "equals",
    "percent",
    "at",
    "cross",
    "check",
)

#: upper-case letters as stroke templates (see `drawn.STYLES`); plain Z (an angular 2), O, I, G, S-like
#: 5s and the like are left out on purpose: they ARE digits to most readers
_LETTERS: dict[str, Callable[[np.random.Generator], list]] = {
    "A": lambda r: [[_L((0, 1), (0.35, 0), (0.7, 1))], [_L((0.15, 0.6), (0.55, 0.6))]],
    "B": lambda r: [
        [
            _L((0, 1), (0, 0)),
            _S((0.35, 0.03), (0.45, 0.22), (0.02, 0.47)),
            _S((0.5, 0.62), (0.5, 0.9), (0.02, 1.0)),
        ]
    ],
    "C": lambda r: [[_S(*_arc(0.5, 0.5, 0.5, 0.5, g := _u(r, 35, 65), 360 - g, step=40))]],
    "D": lambda r: [[_L((0, 1), (0, 0)), _S((0.4, 0.05), (0.65, 0.5), (0.4, 0.95), (0.0, 1.0))]],
    "E": lambda r: [[_L((0.6, 0), (0, 0), (0, 1), (0.6, 1))], [_L((0, 0.5), (0.45, 0.5))]],
    "F": lambda r: [[_L((0.6, 0), (0, 0), (0, 1))], [_L((0, 0.48), (0.45, 0.48))]],
    "H": lambda r: [[_L((0, 0), (0, 1))], [_L((0.6, 0), (0.6, 1))], [_L((0, 0.5), (0.6, 0.5))]],
    "K": lambda r: [[_L((0, 0), (0, 1))], [_L((0.55, 0), (0.02, 0.55), (0.6, 1))]],
    "M": lambda r: [[_L((0, 1), (0.05, 0), (0.35, 0.6), (0.65, 0), (0.7, 1))]],
    "N": lambda r: [[_L((0, 1), (0, 0), (0.6, 1), (0.6, 0))]],
    "P": lambda r: [[_L((0, 1), (0, 0)), _S((0.35, 0.04), (0.48, 0.24), (0.3, 0.46), (0.0, 0.5))]],
    "R": lambda r: [
        [_L((0, 1), (0, 0)), _S((0.35, 0.05), (0.45, 0.25), (0.3, 0.45), (0.0, 0.5)), _L((0.5, 1))]
    ],
    "S": lambda r: [
        [
            _S(
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
    "T": lambda r: [[_L((0, 0), (0.8, 0))], [_L((0.4, 0), (0.4, 1))]],
    "U": lambda r: [[_L((0, 0), (0, 0.65)), _S((0.15, 0.95), (0.45, 0.95), (0.6, 0.65)), _L((0.6, 0))]],
    "V": lambda r: [[_L((0, 0), (0.35, 1), (0.7, 0))]],
    "W": lambda r: [[_L((0, 0), (0.2, 1), (0.4, 0.3), (0.6, 1), (0.8, 0))]],
    "X": lambda r: [[_L((0, 0), (0.7, 1))], [_L((0.7, 0), (0, 1))]],
    "Y": lambda r: [[_L((0, 0), (0.35, 0.5), (0.7, 0))], [_L((0.35, 0.5), (0.35, 1))]],
    "Z": lambda r: [[_L((0, 0), (0.65, 0), (0, 1), (0.7, 1))], [_L((0.12, 0.52), (0.55, 0.48))]],  # crossed Z
    "L": lambda r: [[_L((0, 0), (0, 1), (0.6, 1))]],
}
#: letters whose plain form is close to a digit get a lower weight (S ~ 5, B ~ 8, C ~ an open 0, D ~ 0)
_LETTER_WEIGHTS = {k: (0.4 if k in "SBCD" else 1.0) for k in _LETTERS}


def _neg_letter(rng):
    names = list(_LETTERS)
    w = np.array([_LETTER_WEIGHTS[k] for k in names])
    name = names[int(rng.choice(len(names), p=w / w.sum()))]
    return [_build_stroke(p, rng, 0.025) for p in _LETTERS[name](rng)]


def _shear(strokes, rng):
    aspect, slant = _u(rng, 0.75, 1.25), _u(rng, -0.25, 0.3)
    out = []
    for s in strokes:
        s = np.array(s, dtype=np.float64)
        s[:, 0] = s[:, 0] * aspect + slant * (1.0 - s[:, 1])
        out.append(s)
    return out


def _digit_strokes(rng, traced: Callable | None):
    """Strokes of one random digit: a traced training digit (`traced(rng)`, half the time) or a style."""
    if traced is not None and rng.random() < 0.5:
        got = traced(rng)
        if got is not None:
            strokes, label = got
            return [np.asarray(s, np.float64) for s in strokes], label
    d = int(rng.integers(10))
    return drawn.style_digit(d, rng), d


def _normalise(strokes):
    pts = np.vstack(strokes)
    lo, hi = pts.min(0), pts.max(0)
    h = max(float(hi[1] - lo[1]), 1e-6)
    return [(s - lo) / h for s in strokes]


def _neg_multi_digit(rng, traced=None):
    """Two or three digits side by side (what a person writes for "42")."""
    k = 2 if rng.random() < 0.75 else 3
    out, x = [], 0.0
    for _ in range(k):
        strokes, _ = _digit_strokes(rng, traced)
        strokes = _normalise(strokes)
        scale = _u(rng, 0.8, 1.2)
        dy = _u(rng, -0.15, 0.15)
        width = max(float(np.vstack(strokes)[:, 0].max()), 0.1)
        out += [s * scale + (x, dy) for s in strokes]
        x += width * scale + _u(rng, 0.05, 0.4)
    return out


def _neg_digit_plus_stroke(rng, traced=None):
    """A digit with a long extra stroke through it: a random curve, or a line far past its edges."""
    strokes, label = _digit_strokes(rng, traced)
    strokes = _normalise(strokes)
    pts = np.vstack(strokes)
    w = float(pts[:, 0].max())
    centre = np.array([w / 2, 0.5])
    if rng.random() < 0.5 or label in (0, 1, 7):
        k = int(rng.integers(3, 6))
        ctrl = centre + (rng.random((k, 2)) - 0.5) * (max(w, 0.6) * 1.6, 1.5)
        extra = _catmull_rom(ctrl)
    else:
        a = _u(rng, 0, math.pi)
        half = _u(rng, 0.65, 0.9)
        d = np.array([math.cos(a), math.sin(a)]) * half
        off = (rng.random(2) - 0.5) * 0.3
        extra = _polyline(np.array([centre + off - d, centre + off + d]))
    return strokes + [extra]


#: kind -> (generator, share of the negatives). "scribbles" is drawn's own scribble generator, run on
#: this module's random streams (never the seeds of `drawn.scribbles`, which the evaluation uses).
NEGATIVE_KINDS: dict[str, tuple[Callable | None, float]] = {
    "scribbles": (None, 0.16),
    "polyline": (_neg_polyline, 0.11),
    "bezier": (_neg_bezier, 0.08),
    "curves": (_neg_curves, 0.10),
    "walk": (_neg_walk, 0.07),
    "letter": (_neg_letter, 0.10),
    "multi-digit": (_neg_multi_digit, 0.09),
    "digit+stroke": (_neg_digit_plus_stroke, 0.07),
    "scrawl": (_neg_scrawl, 0.05),
    "spiral": (_neg_spiral, 0.03),
    "grid": (_neg_grid, 0.03),
    "star": (_neg_star, 0.03),
    "filled": (_neg_filled, 0.03),
    "shape": (_neg_shape, 0.05),
}


def negative_strokes(kind: str, rng: np.random.Generator, traced: Callable | None = None) -> list[np.ndarray]:
    """Strokes of one non-digit drawing of `kind` (a key of NEGATIVE_KINDS).

    `traced(rng) -> (strokes, label) | None` supplies real handwritten digits for "multi-digit" and
    "digit+stroke" (style templates otherwise).
    """
    gen, _ = NEGATIVE_KINDS[kind]
    if gen is None:
        w = drawn._SCRIBBLE_WEIGHTS / drawn._SCRIBBLE_WEIGHTS.sum()
        strokes, _ = drawn._scribble(drawn.SCRIBBLE_KINDS[int(rng.choice(len(w), p=w))], rng)
        return [np.asarray(s, np.float64) for s in strokes if len(s)]
    strokes = gen(rng, traced) if kind in ("multi-digit", "digit+stroke") else gen(rng)
    if kind not in ("multi-digit", "digit+stroke") and rng.random() < 0.5:
        strokes = _shear(strokes, rng)
    return [np.asarray(s, np.float64) for s in strokes if len(s)]


# ================================================================================================
# Rendering training / validation data the API's way: strokes -> canvas -> PNG bytes -> to_mnist
# ================================================================================================

STYLE_SHARE = 0.35  #: share of style templates among the positives (rare styles as often as others)
JITTER_SHARE = 0.2  #: share of training positives drawn with pen-speed width variation (robustness)
#: share of training positives given a `pen_variation` (jitter, hooks, coarse sampling, drift)
PEN_SHARE = 0.2
_STATE: dict[str, Any] = {}  # per-process: the MNIST digits to trace (inherited by forked workers)


def _traced(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, tries: int = 6):
    """(strokes, label) of a random digit of `images` whose trace can be trusted (drawn's rules)."""
    for _ in range(tries):
        k = int(rng.integers(len(images)))
        if drawn.scan_pen_ratio(images[k]) > drawn.MAX_PEN_RATIO:
            continue
        strokes = drawn.strokes_from_mnist(images[k])
        if strokes and drawn.stroke_fidelity(strokes, images[k]) >= drawn.MIN_FIDELITY:
            return strokes, int(labels[k])
    return None


def _to_input(strokes, rng, **render_kwargs) -> np.ndarray | None:
    """Render like the canvas, encode as PNG, preprocess like the API: uint8 (784,) or None if refused."""
    from digitlab.errors import DigitlabError
    from digitlab.preprocess import to_mnist

    png = drawn.to_png(drawn.render(strokes, rng, **render_kwargs))
    try:
        x = to_mnist(png)
    except DigitlabError:
        return None
    return np.rint(np.asarray(x, np.float32).reshape(784) * 255.0).astype(np.uint8)


def _positive_item(seed: int, i: int) -> tuple[np.ndarray | None, int, str]:
    rng = np.random.default_rng([41, int(seed), int(i)])
    images, labels = _STATE.get("digits") or (None, None)
    got = None
    if images is not None and rng.random() >= _STATE.get("style_share", STYLE_SHARE):
        got = _traced(images, labels, rng)
    if got is not None:
        strokes, label = got
        kind = "traced"
    else:
        label = int(rng.integers(10))
        names = [n for n, (d, _, _) in drawn.STYLES.items() if d == label]
        kind = names[int(rng.integers(len(names)))]
        strokes = drawn.style_digit(label, rng, style=kind)
    if not _STATE.get("augment", True):
        return _to_input(strokes, rng), label, kind
    if rng.random() < PEN_SHARE:
        strokes = pen_variation(strokes, rng)
    jitter = _u(rng, 0.1, 0.35) if rng.random() < JITTER_SHARE else 0.0
    return _to_input(strokes, rng, width_jitter=jitter), label, kind


def _negative_item(seed: int, i: int) -> tuple[np.ndarray | None, int, str]:
    rng = np.random.default_rng([43, int(seed), int(i)])
    kinds = _STATE.get("kinds") or tuple(NEGATIVE_KINDS)
    w = np.array([NEGATIVE_KINDS[k][1] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    images, labels = _STATE.get("digits") or (None, None)
    traced = (lambda r: _traced(images, labels, r)) if images is not None else None
    strokes = negative_strokes(kind, rng, traced)
    if not strokes:
        return None, NOT_DIGIT, kind
    return _to_input(strokes, rng), NOT_DIGIT, kind


def _run_items(args: tuple[str, int, int, int]) -> list[tuple[np.ndarray | None, int, str]]:
    role, seed, lo, hi = args
    fn = _positive_item if role == "pos" else _negative_item
    return [fn(seed, i) for i in range(lo, hi)]


def _render(
    role: str,
    count: int,
    seed: int,
    *,
    digits: tuple[np.ndarray, np.ndarray] | None,
    kinds: Sequence[str] | None = None,
    style_share: float = STYLE_SHARE,
    augment: bool = True,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X uint8 (n, 784), labels (n,), kinds) for items 0..count-1 of `role`; refused drawings dropped."""
    import multiprocessing

    _STATE.clear()
    _STATE.update(
        digits=digits, kinds=tuple(kinds) if kinds else None, style_share=style_share, augment=augment
    )
    chunk = 50
    tasks = [(role, seed, lo, min(lo + chunk, count)) for lo in range(0, count, chunk)]
    rows: list[tuple[np.ndarray | None, int, str]] = []
    try:
        if jobs > 1 and len(tasks) > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(jobs) as pool:
                for part in pool.imap(_run_items, tasks):
                    rows.extend(part)
                    if progress is not None:
                        progress(len(part))
        else:
            for t in tasks:
                part = _run_items(t)
                rows.extend(part)
                if progress is not None:
                    progress(len(part))
    finally:
        _STATE.clear()
    keep = [r for r in rows if r[0] is not None]
    X = np.stack([r[0] for r in keep]) if keep else np.zeros((0, 784), np.uint8)
    return X, np.array([r[1] for r in keep], dtype=np.int64), [r[2] for r in keep]


def render_positives(
    count: int,
    seed: int,
    *,
    digits=None,
    style_share: float = STYLE_SHARE,
    augment: bool = True,
    jobs: int = 1,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drawn digits through the API's preprocessing: (X uint8 (n, 784), labels, kind).

    `digits=(images28, labels)` are traced (MNIST *training* digits for the detector, never the test
    set); `style_share` of the drawings are style templates (kind = style name), the rest traced
    digits (kind "traced"). `augment` adds pen variation (`PEN_SHARE`, `JITTER_SHARE`) for training;
    validation sets are drawn without it, like the evaluation. Drawing i depends only on (seed, i).
    """
    return _render(
        "pos",
        count,
        seed,
        digits=digits,
        style_share=style_share if digits is not None else 1.0,
        augment=augment,
        jobs=jobs,
        progress=progress,
    )


def render_negatives(
    count: int, seed: int, *, digits=None, kinds: Sequence[str] | None = None, jobs: int = 1, progress=None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Non-digit drawings (NEGATIVE_KINDS) through the API's preprocessing: (X uint8, labels=10, kind).

    Drawings the preprocessing refuses (a few dots, ...) are left out: the API answers those with an
    error, not a digit.
    """
    return _render("neg", count, seed, digits=digits, kinds=kinds, jobs=jobs, progress=progress)


# ================================================================================================
# Features: shape descriptors of the preprocessed 28x28 image (~0.3 ms for one image)
# ================================================================================================

_GY, _GX = np.mgrid[0:28, 0:28].astype(np.float32)
_RING = np.ones((28, 28), bool)
_RING[7:21, 7:21] = False
N_STATS = 20


_MOMENTS = np.stack(
    [np.ones(784), _GY.ravel(), _GX.ravel(), _GY.ravel() ** 2, _GX.ravel() ** 2, _RING.ravel()], axis=1
).astype(np.float64)  # (784, 6)
_EIGHT = np.ones((3, 3), bool)


def _shape_stats(x: np.ndarray) -> np.ndarray:
    """Global shape statistics of (n, 28, 28) images -> (n, N_STATS) float32.

    Ink mass and area; box size (the preprocessing makes the longer side 20 px, so the other side
    is the aspect ratio); pieces of ink; holes (a 0 has one, an 8 two, a spiral or a grid many);
    ink runs per row / column band (how many strokes a line through the drawing crosses); second
    moments; ink in the outer ring.
    """
    from scipy import ndimage

    n = len(x)
    out = np.zeros((n, N_STATS), np.float32)
    on = x >= 0.5
    m = x.reshape(n, 784).astype(np.float64) @ _MOMENTS
    total = np.maximum(m[:, 0], 1e-6)
    cy, cx = m[:, 1] / total, m[:, 2] / total
    out[:, 0] = total / 100.0
    out[:, 1] = np.count_nonzero(on.reshape(n, 784), axis=1) / 100.0
    out[:, 2] = np.count_nonzero(on.any(axis=2), axis=1) / 20.0
    out[:, 3] = np.count_nonzero(on.any(axis=1), axis=1) / 20.0
    padded = np.zeros((30, 30), bool)
    for i in range(n):
        out[i, 4] = min(ndimage.label(on[i], structure=_EIGHT)[1], 6)
        padded[1:-1, 1:-1] = ~on[i]
        lab, regions = ndimage.label(padded)  # 4-connected background; the padding's region is outside
        if regions > 1:
            sizes = np.bincount(lab.ravel(), minlength=regions + 1)[1:]
            inner = np.delete(sizes, lab[0, 0] - 1)
            out[i, 5] = min(len(inner), 6)
            out[i, 6] = min(int(np.count_nonzero(inner >= 3)), 6)
    runs_r = np.count_nonzero(on[:, :, 1:] & ~on[:, :, :-1], axis=2) + on[:, :, 0]
    runs_c = np.count_nonzero(on[:, 1:, :] & ~on[:, :-1, :], axis=1) + on[:, 0, :]
    out[:, 7:11] = runs_r.reshape(n, 4, 7).mean(axis=2)
    out[:, 11:15] = runs_c.reshape(n, 4, 7).mean(axis=2)
    out[:, 15] = runs_r.max(axis=1)
    out[:, 16] = runs_c.max(axis=1)
    out[:, 17] = (m[:, 3] / total - cy**2) / 30.0
    out[:, 18] = (m[:, 4] / total - cx**2) / 30.0
    out[:, 19] = m[:, 5] / total
    return out


N_FEATURES = 784 + 392 + 128 + N_STATS


def detector_features(X: np.ndarray) -> np.ndarray:
    """(n, 784) or (28, 28) images in [0, 1] -> (n, N_FEATURES) float32 detector features.

    Deskewed pixels (784) and their gradient histograms (4x4-px cells, 392), gradient histograms of
    the raw image on a coarse grid (7x7-px cells, 128: orientation before deskewing, so a slanted
    line is not just a "1"), and `N_STATS` shape statistics (`_shape_stats`).
    """
    from digitlab.features import deskew, gradient_histograms

    x = np.asarray(X, dtype=np.float32).reshape(-1, 28, 28)
    straight = deskew(x).reshape(-1, 28, 28)
    out = np.empty((len(x), N_FEATURES), np.float32)
    out[:, :784] = straight.reshape(-1, 784)
    out[:, 784:1176] = gradient_histograms(straight, cell=4)
    out[:, 1176:1304] = gradient_histograms(x, cell=7)
    out[:, 1304:] = _shape_stats(x)
    return out


# ================================================================================================
# The detector: a small MLP in plain numpy, weights in an .npz checked against its manifest
# ================================================================================================

#: a prediction is flagged when the detector's p(not a digit) exceeds t_detector, or the model's top
#: probability is below t_model[name] ("default" for a model the manifest does not know)
DEFAULT_T_MODEL_KEY = "default"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class UncertaintyDetector:
    """The not-a-digit detector and the per-model thresholds of the "uncertain" rule.

    Features are standardised with `mean` / `scale` and clipped to +-CLIP; `weights` are the
    [(W, b), ...] of a ReLU MLP whose last softmax column `not_digit_index` is p(not a digit).
    """

    manifest: dict
    mean: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    weights: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)
    not_digit_index: int = NOT_DIGIT

    @property
    def t_detector(self) -> float:
        return float(self.manifest["thresholds"]["t_detector"])

    @property
    def t_model(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest["thresholds"]["t_model"].items()}

    def threshold(self, model_name: str) -> float:
        """The top-probability threshold for `model_name` (the manifest's default for unknown names)."""
        t = self.manifest["thresholds"]["t_model"]
        return float(t.get(model_name, t[DEFAULT_T_MODEL_KEY]))

    def not_digit_probabilities(self, X: np.ndarray) -> np.ndarray:
        """p(not a digit) for a batch: (n, 784) or (n, 28, 28) preprocessed images -> (n,) float64."""
        h = _standardise(detector_features(X), self.mean, self.scale)
        for W, b in self.weights[:-1]:
            h = np.maximum(h @ W + b, 0.0)
        W, b = self.weights[-1]
        return _softmax((h @ W + b).astype(np.float64))[:, self.not_digit_index]

    def not_digit_probability(self, image28: np.ndarray) -> float:
        """p(not a digit) of one preprocessed image ((28, 28) or (784,), float32 in [0, 1])."""
        return float(self.not_digit_probabilities(np.asarray(image28).reshape(1, 784))[0])

    def is_uncertain(
        self, model_name: str, image28: np.ndarray, proba: np.ndarray, *, p_not_digit: float | None = None
    ) -> bool:
        """The rule: p_not_digit > t_detector or max(proba) < t_model[model_name].

        `proba` is the model's 10 probabilities for `image28`. When several models answer for the
        same image (model=all), compute `p_not_digit = not_digit_probability(image28)` once and pass it.
        """
        if p_not_digit is None:
            p_not_digit = self.not_digit_probability(image28)
        return bool(p_not_digit > self.t_detector or float(np.max(proba)) < self.threshold(model_name))

    def flags(
        self, model_name: str, X: np.ndarray, proba: np.ndarray, *, p_not_digit: np.ndarray | None = None
    ) -> np.ndarray:
        """`is_uncertain` for a batch: (n,) bool."""
        if p_not_digit is None:
            p_not_digit = self.not_digit_probabilities(X)
        proba = np.asarray(proba, dtype=np.float64)
        proba = proba.reshape(len(p_not_digit), -1) if proba.size else proba.reshape(0, 10)
        return (np.asarray(p_not_digit) > self.t_detector) | (proba.max(axis=1) < self.threshold(model_name))


CLIP = 8.0  #: standardised features are clipped to +-CLIP (an odd drawing cannot blow up the MLP)


def _standardise(F: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip((F - mean) / scale, -CLIP, CLIP, dtype=np.float32)


def _pack(mean: np.ndarray, scale: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Weights as float16, standardisation as float32, in a compressed .npz (no pickle)."""
    arrays = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    for i, (W, b) in enumerate(weights):
        arrays[f"W{i}"] = W.astype(np.float16)
        arrays[f"b{i}"] = b.astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _unpack(payload: bytes) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        n = sum(1 for k in z.files if k.startswith("W"))
        weights = [(z[f"W{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)) for i in range(n)]
        return z["mean"].astype(np.float32), z["scale"].astype(np.float32), weights


def _bundled_dir() -> Path:
    from digitlab.models.registry import BUNDLED_DIR

    return BUNDLED_DIR


def load_detector(model_dir: Path | None = None) -> UncertaintyDetector:
    """Load the detector after checking its SHA-256 against `detector.json` (`ArtifactError` if not).

    A `detector.json` in `model_dir` (e.g. one rebuilt with `digitlab train detector`) wins over
    the one bundled with the package. A broken or tampered file is an error, never silently skipped.
    """
    from digitlab.models.artifacts import read_verified

    directory = _detector_dir(model_dir)
    manifest, payload = read_verified(directory, DETECTOR_NAME)
    return _from_payload(directory, manifest, payload)


def _detector_dir(model_dir: Path | None) -> Path:
    if model_dir is not None and (Path(model_dir) / f"{DETECTOR_NAME}.json").exists():
        return Path(model_dir)
    return _bundled_dir()


def _from_payload(directory: Path, manifest: dict, payload: bytes) -> UncertaintyDetector:
    """The detector from verified bytes; `ArtifactError` if they are not a detector of these features."""
    from digitlab.models.artifacts import ArtifactError

    if manifest.get("format") != "npz" or "thresholds" not in manifest:
        raise ArtifactError(
            f"{directory / (DETECTOR_NAME + '.json')} is not a detector manifest: "
            "run `digitlab train detector`."
        )
    try:
        mean, scale, weights = _unpack(payload)
    except Exception as exc:  # noqa: BLE001 -- a verified but unreadable file: say which and how to fix it
        raise ArtifactError(
            f"{directory / manifest['artifact']} could not be read ({type(exc).__name__}): "
            "run `digitlab train detector` to rebuild it."
        ) from None
    if not weights or weights[0][0].shape[0] != N_FEATURES or mean.shape != (N_FEATURES,):
        raise ArtifactError(
            f"{directory / manifest['artifact']} was built for other features: run `digitlab train detector`."
        )
    return UncertaintyDetector(
        manifest, mean, scale, weights, int(manifest.get("not_digit_index", NOT_DIGIT))
    )


# ================================================================================================
# Thresholds and rates
# ================================================================================================

#: the detector alone flags this share of the validation digits ...
DETECTOR_SHARE = 0.006
#: ... and each model's top-probability threshold at most this share of its other correct answers:
#: at most ~0.8 % of correct validation answers flagged per model, well under the 3 % bar, because
#: fresh digits (other writers, other seeds) come out ~1.5x higher than the validation set (measured)
MODEL_SHARE = 0.002


def _max_threshold(conf_correct: np.ndarray, budget: int) -> float:
    """The largest t with #(conf_correct < t) <= budget (t is a value in the data or 0)."""
    if budget < 0 or len(conf_correct) == 0:
        return 0.0
    s = np.sort(conf_correct)
    if budget >= len(s):
        return 1.0
    return float(s[budget])  # conf < s[budget] is true for at most `budget` values


def flag_rates(
    flags_digits: np.ndarray,
    correct: np.ndarray,
    flags_scribbles: np.ndarray,
) -> dict[str, Any]:
    """Rates of one model: share of scribbles flagged, of correct / wrong digit answers flagged."""
    flags_digits, correct = np.asarray(flags_digits, bool), np.asarray(correct, bool)
    flags_scribbles = np.asarray(flags_scribbles, bool)

    def share(mask):
        return round(float(mask.mean()), 4) if mask.size else None

    return {
        "scribbles_flagged": share(flags_scribbles),
        "correct_flagged": share(flags_digits[correct]),
        "wrong_flagged": share(flags_digits[~correct]),
        "digits_flagged": share(flags_digits),
        "accuracy_unflagged": share(correct[~flags_digits]),
        "n_scribbles": int(flags_scribbles.size),
        "n_digits": int(flags_digits.size),
        "n_correct": int(correct.sum()),
    }


def uncertainty_rates(
    detector: UncertaintyDetector,
    predict_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    X_digits: np.ndarray,
    labels: np.ndarray,
    X_scribbles: np.ndarray,
    *,
    ok: np.ndarray | None = None,
    scribbles_ok: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model: how often the "uncertain" rule fires on scribbles and on correct digit answers.

    For `evaluate_drawn`: `X_digits` (n, 784) preprocessed drawn digits with `labels`, `X_scribbles`
    (m, 784) preprocessed non-digits; `ok` / `scribbles_ok` mark the drawings the preprocessing
    accepted (a refused digit is a wrong answer; a refused scribble gets no digit, so it counts as
    flagged). Returns {model: flag_rates(...) + "t_model"}, plus "t_detector" under the key "_rule".
    """
    X_digits = np.asarray(X_digits, np.float32).reshape(-1, 784)
    X_scribbles = np.asarray(X_scribbles, np.float32).reshape(-1, 784)
    ok = np.ones(len(X_digits), bool) if ok is None else np.asarray(ok, bool)
    scribbles_ok = np.ones(len(X_scribbles), bool) if scribbles_ok is None else np.asarray(scribbles_ok, bool)
    p_d = detector.not_digit_probabilities(X_digits) if len(X_digits) else np.zeros(0)
    p_s = detector.not_digit_probabilities(X_scribbles) if len(X_scribbles) else np.zeros(0)
    out: dict[str, dict[str, Any]] = {"_rule": {"t_detector": detector.t_detector}}
    for name, fn in predict_fns.items():
        proba = np.asarray(fn(X_digits), np.float64) if len(X_digits) else np.zeros((0, 10))
        s_proba = np.asarray(fn(X_scribbles), np.float64) if len(X_scribbles) else np.zeros((0, 10))
        correct = ok & (proba.argmax(axis=1) == np.asarray(labels)) if len(proba) else np.zeros(0, bool)
        flags = detector.flags(name, X_digits, proba, p_not_digit=p_d) & ok | ~ok
        s_flags = detector.flags(name, X_scribbles, s_proba, p_not_digit=p_s) | ~scribbles_ok
        out[name] = {**flag_rates(flags, correct, s_flags), "t_model": detector.threshold(name)}
    return out


# ================================================================================================
# Pen variation: what real pen input has and smoothed traces / templates lack
# ================================================================================================


def _resample(stroke: np.ndarray, n: int) -> np.ndarray:
    """`n` points evenly spaced along a stroke (by arc length)."""
    if len(stroke) < 2:
        return stroke
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    s = np.r_[0.0, np.cumsum(seg)]
    if s[-1] <= 0:
        return stroke[:1]
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, stroke[:, 0]), np.interp(t, s, stroke[:, 1])], 1)


def pen_variation(
    strokes: Sequence[np.ndarray], rng: np.random.Generator, kind: str | None = None
) -> list[np.ndarray]:
    """Strokes as a real pen might have left them (the shape stays the same digit).

    kinds: "jitter" (sampling noise along the path), "hooks" (short flicks where the pen lands or
    lifts), "coarse" (few sample points: straight pieces between them, as a slow tablet sends),
    "uneven" (a slow drift of the path). Coordinates in the strokes' own unit box.
    """
    strokes = [np.asarray(s, np.float64) for s in strokes]
    pts = np.vstack(strokes)
    size = max(float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1])), 1e-6)
    kind = kind or ("jitter", "hooks", "coarse", "uneven")[int(rng.integers(4))]
    out = []
    for s in strokes:
        if len(s) < 2:
            out.append(s)
            continue
        length = float(np.hypot(*np.diff(s, axis=0).T).sum())
        if kind == "jitter":
            d = _resample(s, max(8, int(length / size * 40)))
            d = d + rng.normal(0, _u(rng, 0.004, 0.012) * size, d.shape)
            out.append(d)
        elif kind == "hooks":
            d = s
            for end in (0, -1):
                if rng.random() < 0.6:
                    a = _u(rng, 0, 2 * math.pi)
                    hook = d[end] + np.array([math.cos(a), math.sin(a)]) * _u(rng, 0.02, 0.06) * size
                    d = np.vstack([hook, d]) if end == 0 else np.vstack([d, hook])
            out.append(d)
        elif kind == "coarse":
            out.append(_resample(s, max(3, round(length / size * _u(rng, 4, 9)))))
        else:  # uneven
            t = np.linspace(0, 1, len(s))[:, None]
            drift = np.sin(2 * math.pi * (t * _u(rng, 0.5, 1.5) + rng.random(2))) * _u(rng, 0.01, 0.03) * size
            out.append(s + drift)
    return out


# ================================================================================================
# Training and threshold calibration
# ================================================================================================

HIDDEN = 256  #: hidden units of the detector's MLP
ALPHA = 1e-3  #: L2 penalty
VAL_SEED_OFFSET = (
    9000  #: validation drawings use seed + this (training: seed; `digitlab evaluate --drawn`: 0)
)
VAL_COUNT = 4000  #: validation digits (and as many non-digits)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Bar:
    """A rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(task, n)


def _mnist_digits(split: str, mnist_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.data import load_mnist

    images, labels = load_mnist(split, directory=mnist_dir)
    return np.asarray(images), np.asarray(labels)


def validation_set(
    seed: int = 0,
    count: int = VAL_COUNT,
    *,
    mnist_dir: Path | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The drawings the thresholds are chosen on (never trained on, never the evaluation's seeds).

    Digits: MNIST *test* digits with an odd index (other writers than the training set's) traced and
    drawn like `drawn_dataset`, 20 % style templates, no augmentation. Non-digits: half
    `drawn.scribbles`-like, half every other kind of `NEGATIVE_KINDS`. Seed `seed + VAL_SEED_OFFSET`.
    Returns X (uint8 (n, 784)) and labels for "digits" and "negatives", plus the negatives' kinds.
    """
    test, test_labels = _mnist_digits("test", mnist_dir)
    odd = np.arange(1, len(test), 2)
    vseed = seed + VAL_SEED_OFFSET
    with _Bar(progress) as bar:
        Xd, yd, kd = render_positives(
            count,
            vseed,
            digits=(test[odd], test_labels[odd]),
            style_share=drawn.STYLE_SHARE,
            augment=False,
            jobs=jobs,
            progress=bar.task("validation digits", count),
        )
        half = count // 2
        Xs, _, ks = render_negatives(
            half, vseed, kinds=("scribbles",), jobs=jobs, progress=bar.task("validation scribbles", half)
        )
        others = tuple(k for k in NEGATIVE_KINDS if k != "scribbles")
        Xn, _, kn = render_negatives(
            count - half,
            vseed + 1,
            digits=(test[odd], test_labels[odd]),
            kinds=others,
            jobs=jobs,
            progress=bar.task("validation non-digits", count - half),
        )
    return {
        "digits": Xd,
        "labels": yd,
        "digit_kinds": np.array(kd),
        "negatives": np.vstack([Xs, Xn]),
        "negative_kinds": np.array(ks + kn),
    }


def choose_thresholds(
    p_digits: np.ndarray,
    labels: np.ndarray,
    p_negatives: np.ndarray,
    model_outputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    detector_share: float = DETECTOR_SHARE,
    model_share: float = MODEL_SHARE,
) -> dict[str, Any]:
    """Pick t_detector and t_model[name] on validation data.

    t_detector: the detector alone flags `detector_share` of the validation digits (model-agnostic).
    t_model[name]: the largest top-probability threshold that flags at most `model_share` of the
    model's correct answers *not already flagged by the detector*. So each model flags at most about
    detector_share + model_share of its correct validation answers. `model_outputs`: name -> (proba on
    the digits, proba on the negatives). Returns {"t_detector", "t_model": {name: t},
    "validation": {name: rates}}.
    """
    p_digits, p_negatives = np.asarray(p_digits), np.asarray(p_negatives)
    td = float(np.quantile(p_digits, 1.0 - detector_share)) if detector_share > 0 else 1.0
    by_detector = p_digits > td
    t_model, rates = {}, {}
    for name, (pd, pn) in model_outputs.items():
        correct = pd.argmax(axis=1) == labels
        budget = math.floor(model_share * correct.sum())
        t_model[name] = _max_threshold(pd.max(axis=1)[correct & ~by_detector], budget)
        flags = by_detector | (pd.max(axis=1) < t_model[name])
        s_flags = (p_negatives > td) | (pn.max(axis=1) < t_model[name])
        rates[name] = flag_rates(flags, correct, s_flags)
    rates["detector_alone"] = {
        "digits_flagged": round(float(np.mean(by_detector)), 4),
        "negatives_flagged": round(float(np.mean(p_negatives > td)), 4),
    }
    return {"t_detector": td, "t_model": t_model, "validation": rates}


def _ready_models(model_dir: Path | None) -> dict[str, Any]:
    """Every model that loads from `model_dir` (or the settings' model dir), bundled CNN included."""
    from digitlab.core.config import get_settings
    from digitlab.models.registry import MODEL_SPECS, ModelRegistry

    registry = ModelRegistry(
        Path(model_dir) if model_dir is not None else get_settings().model_dir
    ).load_all()
    return {name: registry.get(name) for name in MODEL_SPECS if registry.get(name) is not None}


def _batched(fn: Callable, X: np.ndarray, chunk: int = 1000) -> np.ndarray:
    if len(X) == 0:
        return np.zeros((0, 10))
    return np.vstack([np.asarray(fn(X[i : i + chunk]), np.float64) for i in range(0, len(X), chunk)])


def calibrate(
    detector: UncertaintyDetector,
    val: Mapping[str, np.ndarray],
    models: Mapping[str, Any],
    *,
    detector_share: float = DETECTOR_SHARE,
    model_share: float = MODEL_SHARE,
) -> dict[str, Any]:
    """Thresholds for `detector` and `models` (name -> LoadedModel) on a `validation_set`."""
    from digitlab.models.registry import MODEL_SPECS

    Xd = val["digits"].astype(np.float32) / 255.0
    Xn = val["negatives"].astype(np.float32) / 255.0
    p_d, p_n = detector.not_digit_probabilities(Xd), detector.not_digit_probabilities(Xn)
    outputs = {
        name: (_batched(m.predict_proba, Xd), _batched(m.predict_proba, Xn)) for name, m in models.items()
    }
    chosen = choose_thresholds(
        p_d, val["labels"], p_n, outputs, detector_share=detector_share, model_share=model_share
    )
    t_model = {name: round(t, 4) for name, t in chosen["t_model"].items()}
    # a model the thresholds were not fitted to gets the most cautious calibrated value (or 0.3)
    default = round(min(t_model.values()), 4) if t_model else 0.3
    full = {name: t_model.get(name, default) for name in MODEL_SPECS}
    full[DEFAULT_T_MODEL_KEY] = default
    return {
        "thresholds": {"t_detector": round(chosen["t_detector"], 6), "t_model": full},
        "calibration": {
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "detector_share": detector_share,
            "model_share": model_share,
            "calibrated_models": {name: m.manifest.get("sha256") for name, m in models.items()},
            "uncalibrated_models": [n for n in MODEL_SPECS if n not in t_model],
            "validation_digits": len(Xd),
            "validation_negatives": len(Xn),
            "validation": chosen["validation"],
        },
    }


def train_detector(
    out_dir: Path,
    *,
    seed: int = 0,
    count: int = 24000,
    progress: bool = True,
    jobs: int | None = None,
    model_dir: Path | None = None,
    mnist_dir: Path | None = None,
    val_count: int = VAL_COUNT,
) -> dict:
    """Train the not-a-digit detector, choose its thresholds, write `detector.npz` + `detector.json`.

    `count` training drawings (half digits from MNIST *training* images and style templates, half
    non-digits), rendered the API's way; an MLP on `detector_features`; thresholds on
    `validation_set(seed)` against every model that loads from `model_dir` (default: the settings'
    model dir; the bundled CNN included). Returns the manifest.
    """
    from sklearn.neural_network import MLPClassifier

    from digitlab.models.artifacts import library_versions, save_artifact

    started = time.perf_counter()
    jobs = max(1, jobs or min(2, os.cpu_count() or 1))
    out_dir = Path(out_dir)
    train, train_labels = _mnist_digits("train", mnist_dir)
    n_pos = count // 2
    with _Bar(progress) as bar:
        Xp, yp, kp = render_positives(
            n_pos, seed, digits=(train, train_labels), jobs=jobs, progress=bar.task("training digits", n_pos)
        )
        Xn, yn, kn = render_negatives(
            count - n_pos,
            seed,
            digits=(train, train_labels),
            jobs=jobs,
            progress=bar.task("training non-digits", count - n_pos),
        )
    render_seconds = time.perf_counter() - started
    _log(
        f"rendered {len(Xp)} digits and {len(Xn)} non-digits in {render_seconds:.0f} s; features and fitting"
    )
    F = detector_features(np.vstack([Xp, Xn]).astype(np.float32) / 255.0)
    y = np.concatenate([yp, yn])
    mean = F.mean(axis=0)
    scale = F.std(axis=0)
    scale[scale < 1e-6] = 1.0
    Z = _standardise(F, mean, scale)
    clf = MLPClassifier(
        (HIDDEN,),
        alpha=ALPHA,
        batch_size=256,
        learning_rate_init=1e-3,
        max_iter=80,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=6,
        random_state=seed,
    )
    t = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: early stopping decides
        clf.fit(Z, y)
    fit_seconds = time.perf_counter() - t
    _log(
        f"MLP fitted in {fit_seconds:.0f} s ({clf.n_iter_} epochs, "
        f"held-out accuracy {clf.best_validation_score_:.4f})"
    )
    weights = list(zip(clf.coefs_, clf.intercepts_))
    payload = _pack(mean, scale, weights)
    mean_q, scale_q, weights_q = _unpack(payload)  # thresholds are chosen on exactly what is shipped
    detector = UncertaintyDetector({}, mean_q, scale_q, weights_q, NOT_DIGIT)

    _log("validation drawings (MNIST test digits with odd index, other seeds) and models for the thresholds")
    val = validation_set(seed, val_count, mnist_dir=mnist_dir, jobs=jobs, progress=progress)
    models = _ready_models(model_dir)
    if not models:
        _log("no trained model found: only the detector's threshold is calibrated")
    cal = calibrate(detector, val, models)
    kinds_p: dict[str, int] = {}
    for k in kp:
        key = "traced" if k == "traced" else "styles"
        kinds_p[key] = kinds_p.get(key, 0) + 1
    kinds_n: dict[str, int] = {}
    for k in kn:
        kinds_n[k] = kinds_n.get(k, 0) + 1
    manifest = {
        "display_name": "Not-a-digit detector",
        "version": "1.0.0",
        "kind": "uncertainty-detector",
        "not_digit_index": NOT_DIGIT,
        "features": {
            "n": N_FEATURES,
            "blocks": [
                "deskewed pixels 784",
                "gradient histograms 4x4 cells 392",
                "raw gradient histograms 7x7 cells 128",
                f"shape statistics {N_STATS}",
            ],
            "clip": CLIP,
        },
        "network": {
            "hidden": [HIDDEN],
            "activation": "relu",
            "classes": "0-9 digits, 10 = not a digit",
            "alpha": ALPHA,
            "epochs": int(clf.n_iter_),
            "held_out_accuracy": round(float(clf.best_validation_score_), 4),
        },
        **cal,
        "training_seconds": round(time.perf_counter() - started, 1),
        "train_samples": len(y),
        "training_data": {
            "seed": seed,
            "count": count,
            "digits": kinds_p,
            "non_digits": dict(sorted(kinds_n.items())),
            "digit_source": "MNIST training set (traced) + drawn.STYLES; never the test set",
        },
        "library_versions": library_versions(),
        "params": {"seed": seed, "count": count, "val_count": val_count},
    }
    manifest = save_artifact(out_dir, DETECTOR_NAME, payload, "npz", manifest)
    _log(
        f"detector: {manifest['size_bytes'] / 1e6:.2f} MB in {out_dir}; "
        f"t_detector {manifest['thresholds']['t_detector']:.4f}, "
        f"t_model {manifest['thresholds']['t_model']}; {manifest['training_seconds']:.0f} s in all"
    )
    return manifest


def recalibrate(
    out_dir: Path,
    *,
    model_dir: Path | None = None,
    seed: int | None = None,
    val_count: int | None = None,
    mnist_dir: Path | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> dict:
    """Choose the thresholds again for the models there are now (e.g. after a model was retrained).

    Takes the detector that `load_detector(out_dir)` finds (the one in `out_dir`, else the bundled
    one; hash-checked), keeps its weights, calibrates it against every model that loads from
    `model_dir` (default: the settings' model dir; the bundled CNN included) on its own validation
    set, and writes `detector.npz` + `detector.json` into `out_dir`. The package's bundled files are
    only rewritten when `out_dir` is the bundled folder itself.
    """
    from digitlab.models.artifacts import read_verified, save_artifact

    out_dir = Path(out_dir)
    source = _detector_dir(out_dir)
    manifest, payload = read_verified(source, DETECTOR_NAME)
    detector = _from_payload(source, manifest, payload)
    params = manifest.get("params", {})
    seed = params.get("seed", 0) if seed is None else seed
    val_count = params.get("val_count", VAL_COUNT) if val_count is None else val_count
    jobs = max(1, jobs or min(2, os.cpu_count() or 1))
    val = validation_set(seed, val_count, mnist_dir=mnist_dir, jobs=jobs, progress=progress)
    cal = calibrate(detector, val, _ready_models(model_dir))
    keep = {
        k: v
        for k, v in manifest.items()
        if k not in ("thresholds", "calibration", "sha256", "size_bytes", "artifact", "format", "name")
    }
    keep["params"] = {"seed": seed, "count": params.get("count"), "val_count": val_count}
    new = save_artifact(out_dir, DETECTOR_NAME, payload, "npz", {**keep, **cal})
    _log(
        f"recalibrated {out_dir / (DETECTOR_NAME + '.json')}: "
        f"t_detector {new['thresholds']['t_detector']:.4f}, "
        f"t_model {new['thresholds']['t_model']}"
    )
    return new


def train_detector_command(
    *,
    out_dir: Path | None = None,
    count: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    calibrate_only: bool = False,
) -> int:
    """`digitlab train detector [--out DIR] [--count N] [--calibrate-only]`."""
    from digitlab.core.config import get_settings

    settings = get_settings()
    out = Path(out_dir) if out_dir is not None else settings.model_dir
    if calibrate_only:
        recalibrate(out, model_dir=settings.model_dir, mnist_dir=settings.mnist_dir, jobs=jobs)
        return 0
    train_detector(
        out,
        seed=seed,
        count=count or 24000,
        jobs=jobs,
        model_dir=settings.model_dir,
        mnist_dir=settings.mnist_dir,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m digitlab.uncertainty`: the same as `digitlab train detector` (see docs/uncertainty.md)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m digitlab.uncertainty", description=train_detector_command.__doc__
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: DIGITLAB_MODEL_DIR)")
    parser.add_argument("--count", type=int, default=None, help="training drawings (default 24000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument(
        "--calibrate-only", action="store_true", help="keep the weights, choose the thresholds again"
    )
    args = parser.parse_args(argv)
    return train_detector_command(
        out_dir=args.out, count=args.count, seed=args.seed, jobs=args.jobs, calibrate_only=args.calibrate_only
    )


if __name__ == "__main__":
    sys.exit(main())
