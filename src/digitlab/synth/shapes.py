"""Stroke primitives: splines, arcs and polylines in a unit box, and stroke templates built from them.

Coordinates are `(x, y)` with y pointing down; a stroke is a float array `(k, 2)`. A stroke template
is a list of pieces (`spline`, `segments`, `closed_spline`), each continuing from the previous one.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

Stroke = np.ndarray
Strokes = list[np.ndarray]




def catmull_rom(ctrl: np.ndarray, spacing: float = 0.02, closed: bool = False) -> np.ndarray:
    """Centripetal Catmull-Rom spline through the control points, sampled every ~`spacing`."""
    p = np.asarray(ctrl, dtype=np.float64)
    if len(p) < 2:
        return p
    if closed:
        ext = np.vstack([p[-1], p, p[0], p[1]])
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(len(ext) - 3):
        p0, p1, p2, p3 = ext[i : i + 4]
        d01 = max(np.hypot(*(p1 - p0)) ** 0.5, 1e-4)
        d12 = max(np.hypot(*(p2 - p1)) ** 0.5, 1e-4)
        d23 = max(np.hypot(*(p3 - p2)) ** 0.5, 1e-4)
        t0, t1 = 0.0, d01
        t2 = t1 + d12
        t3 = t2 + d23
        n = max(2, math.ceil(float(np.hypot(*(p2 - p1))) / spacing))
        t = np.linspace(t1, t2, n, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    out.append(p[:1] if closed else p[-1:])
    return np.vstack(out)


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, step: float = 45.0) -> list:
    """Control points on an ellipse from angle a0 to a1 (degrees; 90 = top, increasing = anticlockwise)."""
    n = max(2, math.ceil(abs(a1 - a0) / step) + 1)
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(v), cy - ry * math.sin(v)) for v in t]


# A stroke template is a list of pieces ("s" spline through points, "l" straight segments,
# "o" closed spline); each piece continues from the end of the previous one.
def spline(*pts):
    return ("s", pts)


def segments(*pts):
    return ("l", pts)


def closed_spline(*pts):
    return ("o", pts)


def build_stroke(pieces, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Jitter the control points of one stroke template and sample it densely."""
    out: list[np.ndarray] = []
    for kind, pts in pieces:
        ctrl = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        ctrl = ctrl + rng.normal(0.0, noise, ctrl.shape)
        if kind == "o":
            out.append(catmull_rom(ctrl, closed=True))
            continue
        if out:
            ctrl = np.vstack([out[-1][-1:], ctrl])
        dense = catmull_rom(ctrl) if kind == "s" else polyline(ctrl)
        out.append(dense[1:] if out else dense)
    return np.vstack(out)


def polyline(ctrl: np.ndarray, spacing: float = 0.05) -> np.ndarray:
    pts = [ctrl[:1]]
    for a, b in itertools.pairwise(ctrl):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / spacing))
        t = np.linspace(0, 1, n + 1)[1:, None]
        pts.append(a + (b - a) * t)
    return np.vstack(pts)


def uniform(rng, a, b):
    return float(rng.uniform(a, b))
