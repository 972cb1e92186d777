"""Digits as a person draws them on the app's 280x280 canvas, for evaluation and augmentation.

MNIST digits are scans: thin, centred, 20 px tall, slightly blurred. Canvas drawings are smooth pen
strokes of constant width with round caps, any size and place, in any colour. This module turns
digits into pen strokes and re-draws them like the canvas does:

* `strokes_from_mnist(img28)`: thin a scanned digit to its skeleton, trace the skeleton into pen
  paths, smooth them. Used on MNIST *test* digits (evaluation) or training digits (augmentation).
* `style_digit(digit, rng)`: parametric writing styles MNIST rarely has (7 with a crossbar or a
  curved top, 9 with a curled tail, 1 with a long flag and base, open-top 4, ...), jittered.
* `render(strokes, rng)`: the pen: round caps and joins, width 8-25 canvas px, ink height 35-85 %
  of the canvas, anywhere on it, rotated +-15 degrees, in one of four colour schemes.
* `drawn_dataset(count, seed)`: a deterministic drawn-digit set; `scribbles(count, seed)`: drawings
  that are not digits (for the "unsure" check); `evaluate_drawn(...)`: PNG bytes -> the API's
  preprocessing -> models; `evaluate_drawn_command(...)`: `digitlab evaluate --drawn`.

Coordinates are `(x, y)` with y pointing down; a stroke is a float array `(k, 2)`.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "CANVAS",
    "HEIGHT_RANGE",
    "RARE_STYLES",
    "ROTATION_DEG",
    "SCHEMES",
    "SCRIBBLE_KINDS",
    "SOURCES",
    "STYLES",
    "WIDTH_RANGE",
    "drawn_dataset",
    "evaluate_drawn",
    "evaluate_drawn_command",
    "ink_bbox",
    "redraw",
    "render",
    "render_with_meta",
    "save_contact_sheet",
    "scan_pen_ratio",
    "scribbles",
    "skeletonize",
    "stroke_fidelity",
    "strokes_from_mnist",
    "style_digit",
    "to_png",
]

CANVAS = 280  #: side of the app's drawing canvas, in px; widths and heights below refer to it
WIDTH_RANGE = (8, 25)  #: pen width in canvas px (inclusive), uniform
HEIGHT_RANGE = (0.35, 0.85)  #: ink height as a fraction of the canvas, uniform
ROTATION_DEG = 15.0  #: rotation uniform in +-ROTATION_DEG
SCHEMES = ("black-on-white", "white-on-black", "colour-on-light", "colour-on-transparent")
WIDTH_BUCKETS = ((8, 12), (13, 18), (19, 25))
HEIGHT_BUCKETS = ((0.35, 0.5), (0.5, 0.7), (0.7, 0.85))

Stroke = np.ndarray
Strokes = list[np.ndarray]


# ================================================================================================
# Skeleton: thinning (Zhang-Suen, vectorised with a lookup table) and tracing into paths
# ================================================================================================


def _zhang_suen_luts() -> tuple[np.ndarray, np.ndarray]:
    """Removal tables for the two sub-iterations, indexed by the 8-neighbour code (bit k = P(k+2))."""
    lut1 = np.zeros(256, dtype=bool)
    lut2 = np.zeros(256, dtype=bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2=N, P3=NE, P4=E, P5=SE, P6=S, P7=SW, P8=W, P9=NW
        b = sum(p)
        a = sum(1 for k in range(8) if p[k] == 0 and p[(k + 1) % 8] == 1)
        p2, _, p4, _, p6, _, p8, _ = p
        if 2 <= b <= 6 and a == 1:
            lut1[code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
            lut2[code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return lut1, lut2


_LUT1, _LUT2 = _zhang_suen_luts()


def _neighbour_code(img: np.ndarray) -> np.ndarray:
    """8-neighbour code of every pixel of a 0/1 uint8 image whose border row/column is 0."""
    c = np.zeros(img.shape, dtype=np.uint8)
    i = img
    c[1:-1, 1:-1] = (
        i[:-2, 1:-1]  # N
        | (i[:-2, 2:] << 1)  # NE
        | (i[1:-1, 2:] << 2)  # E
        | (i[2:, 2:] << 3)  # SE
        | (i[2:, 1:-1] << 4)  # S
        | (i[2:, :-2] << 5)  # SW
        | (i[1:-1, :-2] << 6)  # W
        | (i[:-2, :-2] << 7)  # NW
    )
    return c


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeleton of a boolean mask (Zhang-Suen thinning); no scikit-image needed."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    img = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=np.uint8)
    img[1:-1, 1:-1] = mask[r0:r1, c0:c1]
    while True:
        changed = False
        for lut in (_LUT1, _LUT2):
            remove = (img == 1) & lut[_neighbour_code(img)]
            if remove.any():
                img[remove] = 0
                changed = True
        if not changed:
            break
    out[r0:r1, c0:c1] = img[1:-1, 1:-1].astype(bool)
    # Zhang-Suen erases a 2x2 block entirely: keep one pixel of every component it wiped out
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n > 1 or not out.any():
        kept = np.unique(labels[out])
        for lab in range(1, n + 1):
            if lab not in kept:
                r, c = np.argwhere(labels == lab)[0]
                out[r, c] = True
    return out


_OFF4 = ((-1, 0), (0, 1), (1, 0), (0, -1))
_OFFD = ((-1, 1), (1, 1), (1, -1), (-1, -1))


def _adjacency(skel: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Pixel graph of a skeleton: 4-neighbours always, a diagonal only when no 4-path joins the two.

    Dropping the diagonals of little "staircase" triangles keeps a smooth line at degree 2, so only
    real ends (degree 1) and real junctions (degree >= 3) become graph nodes.
    """
    h, w = skel.shape
    pad = np.zeros((h + 2, w + 2), dtype=bool)
    pad[1:-1, 1:-1] = skel

    def shifted(dr: int, dc: int) -> np.ndarray:
        return pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    rs, cs = np.nonzero(skel)
    adj: dict[tuple[int, int], list[tuple[int, int]]] = {k: [] for k in zip(rs.tolist(), cs.tolist())}
    for dr, dc in _OFF4 + _OFFD:
        ok = shifted(dr, dc)[rs, cs]
        if dr and dc:
            ok &= ~shifted(dr, 0)[rs, cs] & ~shifted(0, dc)[rs, cs]
        for r, c in zip(rs[ok].tolist(), cs[ok].tolist()):
            adj[(r, c)].append((r + dr, c + dc))
    return adj


def _trace_edges(adj: Mapping[tuple[int, int], list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """Split the pixel graph into edges: pixel paths between nodes (degree != 2), plus pure cycles."""
    nodes = {p for p, nb in adj.items() if len(nb) != 2}
    seen: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    edges: list[list[tuple[int, int]]] = []
    for n in nodes:
        for m in adj[n]:
            if (n, m) in seen:
                continue
            seen.add((n, m))
            seen.add((m, n))
            path = [n, m]
            prev, cur = n, m
            while cur not in nodes:
                nxt = [q for q in adj[cur] if q != prev and (cur, q) not in seen]
                if not nxt:
                    break
                q = nxt[0]
                seen.add((cur, q))
                seen.add((q, cur))
                path.append(q)
                prev, cur = cur, q
            edges.append(path)
    # cycles made only of degree-2 pixels (an "0" with no junction)
    for start, nb in adj.items():
        if len(nb) != 2 or any((start, q) in seen for q in nb):
            continue
        path = [start]
        prev, cur = None, start
        while True:
            nxt = [q for q in adj[cur] if q != prev and (cur, q) not in seen]
            if not nxt:
                break
            q = nxt[0]
            seen.add((cur, q))
            seen.add((q, cur))
            path.append(q)
            prev, cur = cur, q
            if cur == start:
                break
        if len(path) > 2:
            edges.append(path)
    return edges


def _path_length(path: Sequence[tuple[int, int]]) -> float:
    a = np.asarray(path, dtype=np.float64)
    return float(np.hypot(*np.diff(a, axis=0).T).sum()) if len(a) > 1 else 0.0


SPUR = 0.4  #: a side branch sticking out of its stroke by less than this many half pen widths is an artefact
HOLLOW = 1.6  #: ink thicker than this many half pen widths, where a stroke ends, is a filled-in loop


def _prune(skel: np.ndarray, dist: np.ndarray, half: float, rounds: int = 4) -> np.ndarray:
    """Remove thinning artefacts, re-tracing after each round.

    A spur (end -> junction branch) is an artefact when it barely sticks out of the stroke it
    hangs on: its length plus the ink left beyond its end, minus the junction's half width, is
    under one half pen width. A real short stroke (a 7's crossbar, a 4's tip) sticks out further.
    Specks (short isolated pieces, when there is more to the drawing) go too.
    """
    skel = skel.copy()
    for _ in range(rounds):
        adj = _adjacency(skel)
        deg = {p: len(nb) for p, nb in adj.items()}
        changed = False
        for path in _trace_edges(adj):
            a, b = path[0], path[-1]
            if a == b:
                continue
            da, db = deg[a], deg[b]
            length = _path_length(path)
            if da == 1 and db == 1:
                if length < 2.0 * half and len(adj) > len(path) + 2:
                    for p in path:
                        skel[p] = False
                    changed = True
            elif (da == 1 and db >= 3) or (db == 1 and da >= 3):
                end, junction = (a, b) if da == 1 else (b, a)
                sticks_out = length + dist[end] - dist[junction]
                if sticks_out < SPUR * half + 1.0:
                    for p in path:
                        if p != junction:
                            skel[p] = False
                    changed = True
        if not changed:
            break
    return skel


def _extend_end(path: np.ndarray, mask: np.ndarray, reach: float) -> np.ndarray:
    """Prolong an open path's last point along its direction to where the ink ends.

    Thinning shortens every stroke end by about half the pen width; a re-drawn stroke with a
    thinner pen would look stubby without this.
    """
    d = -_leaving_direction(path[::-1], reach)
    if not np.any(d):
        return path
    h, w = mask.shape
    p = path[-1].astype(np.float64)
    extra = []
    for _ in range(int(4 * reach) + 2):
        p = p + d
        r, c = round(float(p[0])), round(float(p[1]))
        if not (0 <= r < h and 0 <= c < w) or not mask[r, c]:
            break
        extra.append(p.copy())
    if len(extra) > 1:
        return np.vstack([path, extra[:-1]])  # stop a pixel short of the edge: the cap is round
    return path


def _leaving_direction(path: list[tuple[int, int]], reach: float) -> np.ndarray:
    """Unit vector (row, col) from path[0] towards the point `reach` pixels along the path."""
    a = np.asarray(path, dtype=np.float64)
    steps = np.r_[0.0, np.cumsum(np.hypot(*np.diff(a, axis=0).T))]
    k = int(np.searchsorted(steps, reach))
    k = min(max(k, 1), len(a) - 1)
    v = a[k] - a[0]
    n = np.hypot(*v)
    return v / n if n > 0 else v


def _chain_strokes(adj, edges: list[list[tuple[int, int]]], width: float) -> list[tuple[np.ndarray, bool]]:
    """Join edges through junctions the way a pen passes through them (best straight continuation).

    Returns (pixel path (k, 2) as (row, col) floats, closed?) per pen stroke.
    """
    deg = {p: len(nb) for p, nb in adj.items()}
    # junction clusters: junction pixels joined by a bridge shorter than a stroke width are one node
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(p):
        while parent.get(p, p) != p:
            p = parent[p]
        return p

    bridges = set()
    for i, e in enumerate(edges):
        a, b = e[0], e[-1]
        if a != b and deg[a] >= 3 and deg[b] >= 3 and _path_length(e) <= width:
            parent[find(a)] = find(b)
            bridges.add(i)
    ends: dict[tuple[int, int], list[tuple[int, int]]] = {}  # node -> [(edge index, end 0/1)]
    for i, e in enumerate(edges):
        if i in bridges:
            continue
        for side, p in ((0, e[0]), (1, e[-1])):
            if deg[p] >= 3:
                ends.setdefault(find(p), []).append((i, side))
    link: dict[tuple[int, int], tuple[int, int]] = {}
    reach = max(3.0, 1.5 * width)
    for node_ends in ends.values():
        dirs = {}
        for i, side in node_ends:
            path = edges[i] if side == 0 else edges[i][::-1]
            dirs[(i, side)] = _leaving_direction(path, reach)
        free = list(node_ends)
        while len(free) >= 2:
            best, pair = -0.35, None  # only continue through angles wider than ~110 degrees
            for x in range(len(free)):
                for y in range(x + 1, len(free)):
                    score = -float(np.dot(dirs[free[x]], dirs[free[y]]))
                    if score > best:
                        best, pair = score, (free[x], free[y])
            if pair is None:
                break
            link[pair[0]] = pair[1]
            link[pair[1]] = pair[0]
            free.remove(pair[0])
            free.remove(pair[1])
    used: set[int] = set(bridges)
    out: list[tuple[np.ndarray, bool]] = []

    def walk(i: int, side: int) -> tuple[list[tuple[int, int]], bool]:
        """Follow edges starting at edge i entered from `side`; returns the joined pixel path."""
        pts: list[tuple[int, int]] = []
        closed = False
        while True:
            used.add(i)
            e = edges[i] if side == 0 else edges[i][::-1]
            pts.extend(e if not pts else e[1:] if pts[-1] == e[0] else e)
            nxt = link.get((i, 1 - side))
            if nxt is None:
                break
            j, s = nxt
            if j in used:
                closed = j == start
                break
            i, side = j, s
        return pts, closed

    for i, e in enumerate(edges):  # open chains first: start at a free end
        for side in (0, 1):
            if i not in used and (i, side) not in link:
                start = i
                pts, closed = walk(i, side)
                out.append((np.asarray(pts, dtype=np.float64), closed))
    for i in range(len(edges)):  # what is left is made of cycles
        if i not in used:
            start = i
            pts, _ = walk(i, 0)
            closed = pts[0] == pts[-1] or len(pts) > 2 and np.hypot(*np.subtract(pts[0], pts[-1])) < width
            out.append((np.asarray(pts, dtype=np.float64), bool(closed)))
    return out


def _rdp(points: np.ndarray, eps: float) -> np.ndarray:
    """Ramer-Douglas-Peucker simplification (iterative)."""
    n = len(points)
    if n < 3:
        return points
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = points[i], points[j]
        seg = b - a
        seg_len = np.hypot(*seg)
        mid = points[i + 1 : j]
        if seg_len == 0:
            d = np.hypot(*(mid - a).T)
        else:
            d = np.abs(seg[0] * (mid[:, 1] - a[1]) - seg[1] * (mid[:, 0] - a[0])) / seg_len
        k = int(np.argmax(d))
        if d[k] > eps:
            m = i + 1 + k
            keep[m] = True
            stack.append((i, m))
            stack.append((m, j))
    return points[keep]


def _chaikin(points: np.ndarray, iterations: int = 2, closed: bool = False) -> np.ndarray:
    """Corner cutting: a smooth curve; open curves keep their end points."""
    p = points
    for _ in range(iterations):
        if len(p) < 3:
            return p
        if closed:
            q = np.roll(p, -1, axis=0)
            new = np.empty((2 * len(p), 2))
            new[0::2] = 0.75 * p + 0.25 * q
            new[1::2] = 0.25 * p + 0.75 * q
            p = new
        else:
            a, b = p[:-1], p[1:]
            new = np.empty((2 * len(a), 2))
            new[0::2] = 0.75 * a + 0.25 * b
            new[1::2] = 0.25 * a + 0.75 * b
            p = np.vstack([p[:1], new, p[-1:]])
    if closed:
        p = np.vstack([p, p[:1]])
    return p


def _smooth_path(path_rc: np.ndarray, closed: bool, sigma: float, eps: float) -> np.ndarray:
    """Pixel path (row, col) -> smooth (x, y) polyline: Gaussian along the path, RDP, Chaikin."""
    xy = path_rc[:, ::-1].astype(np.float64)
    if closed and len(xy) > 3 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    if len(xy) >= 4:
        mode = "wrap" if closed else "nearest"
        sm = ndimage.gaussian_filter1d(xy, sigma, axis=0, mode=mode)
        if not closed:  # keep the ends where the pen really started/stopped
            sm[0], sm[-1] = xy[0], xy[-1]
        xy = sm
    if closed:
        xy = np.vstack([xy, xy[:1]])
    xy = _rdp(xy, eps)
    if closed and len(xy) > 3:
        return _chaikin(xy[:-1], 2, closed=True)
    return _chaikin(xy, 2)


def strokes_from_mnist(
    img28: np.ndarray,
    *,
    upsample: int = 3,
    threshold: float = 0.4,
    hole_threshold: float = 0.7,
) -> Strokes:
    """Pen strokes of a scanned digit: upsample, threshold, thin, trace, prune spurs, smooth.

    `img28` is a (28, 28) digit, uint8 0-255 or float 0-1, ink bright (MNIST convention). Returns a
    list of `(k, 2)` float arrays of `(x, y)` in the image's unit square (0 = top/left, 1 =
    bottom/right edge of the 28x28 frame); an empty list for an empty image.
    """
    a = np.asarray(img28, dtype=np.float32)
    if a.ndim == 1:
        a = a.reshape(28, 28)
    if a.max(initial=0) > 1.0:
        a = a / 255.0
    if a.max(initial=0) <= 0:
        return []
    a = a / a.max()
    big = ndimage.zoom(a, upsample, order=1, prefilter=False, grid_mode=True, mode="nearest")
    big = ndimage.gaussian_filter(big, 0.35 * upsample)
    big /= big.max()
    mask = big > threshold
    if not mask.any():
        return []
    # a loop drawn with a thick pen is often filled in the scan but lighter inside: open the holes
    # that a higher threshold reveals, so a "9" keeps its loop instead of turning into a "7"
    strong = big > hole_threshold
    holes = ndimage.binary_fill_holes(strong) & ~strong
    if holes.any():
        lab, n = ndimage.label(holes)
        sizes = ndimage.sum_labels(holes, lab, np.arange(1, n + 1))
        big_enough = np.flatnonzero(sizes >= (0.8 * upsample) ** 2) + 1
        if len(big_enough):
            mask &= ~np.isin(lab, big_enough)
    skel = skeletonize(mask)
    if not skel.any():
        return []
    dist = ndimage.distance_transform_edt(mask)
    half = max(float(np.median(dist[skel])), 1.0)  # half the typical pen width, upsampled px
    skel = _prune(skel, dist, half)
    # A blob well over a pen wide in which a stroke *ends* is a loop filled in by a thick pen (the
    # stub of a "9" or "6" whose head is solid ink): hollow it out so the skeleton goes round it.
    # A thick corner or a pooled junction has strokes passing through, not ending: left alone.
    core = dist > HOLLOW * half
    if core.sum() >= upsample**2:
        lab, n = ndimage.label(core)
        reach = ndimage.distance_transform_edt(~core) <= half
        nearest = ndimage.distance_transform_edt(~core, return_distances=False, return_indices=True)
        ends = [p for p, nb in _adjacency(skel).items() if len(nb) <= 1]
        hollow = set()
        for r, c in ends:
            if reach[r, c]:
                hollow.add(int(lab[nearest[0][r, c], nearest[1][r, c]]))
        hollow.discard(0)
        sizes = ndimage.sum_labels(core, lab, sorted(hollow)) if hollow else []
        hollow = {k for k, sz in zip(sorted(hollow), sizes) if sz >= upsample**2}
        if hollow:
            mask = mask & ~np.isin(lab, sorted(hollow))
            skel = skeletonize(mask)
            dist = ndimage.distance_transform_edt(mask)
            half = max(float(np.median(dist[skel])), 1.0)
            skel = _prune(skel, dist, half)
    width = 2.0 * half
    adj = _adjacency(skel)
    if not adj:
        return []
    edges = _trace_edges(adj)
    if not edges:  # a single dot
        r, c = next(iter(adj))
        return [np.array([[(c + 0.5) / (28 * upsample), (r + 0.5) / (28 * upsample)]])]
    strokes = []
    scale = 1.0 / (28 * upsample)
    for path, closed in _chain_strokes(adj, edges, width):
        if not closed and len(path) >= 3:
            path = _extend_end(_extend_end(path, mask, half)[::-1], mask, half)[::-1]
        xy = _smooth_path(path, closed, sigma=0.6 * upsample, eps=0.25 * upsample)
        strokes.append((xy + 0.5) * scale)
    return strokes


def stroke_fidelity(strokes: Sequence[np.ndarray], img28: np.ndarray, tolerance: float = 1.0) -> float:
    """How faithfully strokes reproduce a scanned digit, 0-1 (1 = perfect).

    The strokes are drawn at 28x28 with the scan's own mean pen width (from its distance map);
    the score is min(recall, precision): the share of the scan's ink within `tolerance` px of the
    drawing, and the share of the drawing's ink within `tolerance` px of the scan's. A lost loop or
    stroke drops it well below 0.9.
    """
    a = np.asarray(img28, dtype=np.float64).reshape(28, 28)
    if a.max(initial=0) > 1.0:
        a = a / 255.0
    if not strokes or a.max(initial=0) <= 0:
        return 0.0
    scan = a > 0.5 * a.max()
    inked = a > 0.4 * a.max()
    skel = skeletonize(inked)
    width = 2.0 * float(np.mean(ndimage.distance_transform_edt(inked)[skel])) if skel.any() else 1.0
    ss = 4
    img = Image.new("L", (28 * ss, 28 * ss), 0)
    draw = ImageDraw.Draw(img)
    for s in strokes:
        _draw_stroke(draw, np.asarray(s) * 28 * ss, max(width, 1.0) * ss, 0.0, None)
    drawn = np.asarray(img.reduce(ss)) > 127
    if not drawn.any():
        return 0.0
    near_drawn = ndimage.distance_transform_edt(~drawn) <= tolerance
    near_scan = ndimage.distance_transform_edt(~scan) <= tolerance
    recall = float((scan & near_drawn).sum()) / max(int(scan.sum()), 1)
    precision = float((drawn & near_scan).sum()) / int(drawn.sum())
    return min(recall, precision)


# ================================================================================================
# Style templates: writing styles MNIST rarely has, plus ordinary ones
# ================================================================================================


def _catmull_rom(ctrl: np.ndarray, spacing: float = 0.02, closed: bool = False) -> np.ndarray:
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


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, step: float = 45.0) -> list:
    """Control points on an ellipse from angle a0 to a1 (degrees; 90 = top, increasing = anticlockwise)."""
    n = max(2, math.ceil(abs(a1 - a0) / step) + 1)
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(v), cy - ry * math.sin(v)) for v in t]


# A stroke template is a list of pieces ("s" spline through points, "l" straight segments,
# "o" closed spline); each piece continues from the end of the previous one.
def _S(*pts):
    return ("s", pts)


def _L(*pts):
    return ("l", pts)


def _O(*pts):
    return ("o", pts)


def _build_stroke(pieces, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Jitter the control points of one stroke template and sample it densely."""
    out: list[np.ndarray] = []
    for kind, pts in pieces:
        ctrl = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        ctrl = ctrl + rng.normal(0.0, noise, ctrl.shape)
        if kind == "o":
            out.append(_catmull_rom(ctrl, closed=True))
            continue
        if out:
            ctrl = np.vstack([out[-1][-1:], ctrl])
        dense = _catmull_rom(ctrl) if kind == "s" else _polyline(ctrl)
        out.append(dense[1:] if out else dense)
    return np.vstack(out)


def _polyline(ctrl: np.ndarray, spacing: float = 0.05) -> np.ndarray:
    pts = [ctrl[:1]]
    for a, b in itertools.pairwise(ctrl):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / spacing))
        t = np.linspace(0, 1, n + 1)[1:, None]
        pts.append(a + (b - a) * t)
    return np.vstack(pts)


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _s0_oval(r):
    start = _u(r, 80, 120)
    return [[_S(*_arc(0.3, 0.5, 0.3, 0.5, start, start + 360 + _u(r, 5, 30)))]]


def _s0_narrow(r):
    start = _u(r, 60, 100)
    return [[_S(*_arc(0.2, 0.5, 0.2, 0.5, start, start - 360 - _u(r, 0, 25)))]]


def _s1_stick(r):
    return [[_S((0.3, 0.0), (0.3 + _u(r, -0.03, 0.03), 0.5), (0.3, 1.0))]]


def _s1_flag(r):
    return [[_L((0.3 - _u(r, 0.12, 0.2), _u(r, 0.12, 0.25)), (0.3, 0.0), (0.3, 1.0))]]


def _s1_long_flag(r):
    return [[_L((0.3 - _u(r, 0.25, 0.35), _u(r, 0.3, 0.45)), (0.3, 0.0), (0.3, 1.0))]]


def _s1_flag_base(r):
    base = _u(r, 0.2, 0.3)
    return [
        [_L((0.3 - _u(r, 0.22, 0.32), _u(r, 0.28, 0.42)), (0.3, 0.0), (0.3, 1.0))],
        [_L((0.3 - base, 1.0), (0.3 + base, 1.0))],
    ]


def _s2_plain(r):
    return [
        [
            _S((0.02, 0.25), (0.22, 0.03), (0.45, 0.0), (0.66, 0.13), (0.64, 0.36), (0.35, 0.68), (0.03, 1.0)),
            _L((_u(r, 0.6, 0.8), 0.99)),
        ]
    ]


def _s2_loop(r):
    # a curly 2: the diagonal runs into a loop at the bottom left, then the base goes right
    rad = _u(r, 0.1, 0.15)
    cx, cy = 0.1 + rad, 1.0 - rad
    return [
        [
            _S((0.03, 0.22), (0.25, 0.01), (0.52, 0.03), (0.64, 0.26), (0.45, 0.55), (cx + 0.05, cy - rad - 0.1)),
            _S(*_arc(cx, cy, rad * 1.2, rad, 150, 450, step=60), (cx + 0.3, 1.0)),
            _L((_u(r, 0.65, 0.8), 0.98)),
        ]
    ]


def _s3_round(r):
    mid = (_u(r, 0.25, 0.35), 0.47)
    return [
        [
            _S((0.03, 0.14), (0.28, 0.0), (0.55, 0.04), (0.62, 0.24), mid),
            _S((0.6, 0.58), (0.66, 0.8), (0.42, 1.0), (0.02, 0.88)),
        ]
    ]


def _s3_flat_top(r):
    return [
        [
            _L((0.05, 0.0), (0.65, 0.0), (0.28, 0.42)),
            _S((0.6, 0.55), (0.66, 0.8), (0.4, 1.0), (0.03, 0.88)),
        ]
    ]


def _s4_closed(r):
    x = _u(r, 0.45, 0.55)
    bar = _u(r, 0.6, 0.7)
    return [
        [_L((x, 0.0), (0.0, bar), (_u(r, 0.7, 0.8), bar))],
        [_L((x + 0.02, 0.02), (x + 0.02, 1.0))],
    ]


def _s4_open(r):
    bar = _u(r, 0.55, 0.68)
    x = _u(r, 0.5, 0.6)
    return [
        [_L((_u(r, 0.05, 0.18), 0.0), (0.02, bar), (_u(r, 0.72, 0.85), bar))],
        [_L((x, _u(r, 0.0, 0.12)), (x - 0.02, 1.0))],
    ]


def _belly(r):
    return _S((0.38, 0.37), (0.62, 0.48), (0.67, 0.74), (0.44, 0.98), (0.02, 0.9))


def _s5_plain(r):
    top = (0.15, 0.0)
    return [
        [_L(top, (0.11, 0.46)), _belly(r)],
        [_L(top, (_u(r, 0.6, 0.72), 0.0))],
    ]


def _s5_onestroke(r):
    return [[_L((_u(r, 0.6, 0.72), 0.0), (0.15, 0.0), (0.11, 0.46)), _belly(r)]]


def _s6_plain(r):
    return [
        [
            _S(
                (0.6, 0.02), (0.32, 0.15), (0.12, 0.48), (0.12, 0.8), (0.34, 1.0), (0.6, 0.88),
                (0.6, 0.63), (0.37, 0.52), (0.13, 0.66),
            )
        ]
    ]


def _s6_straight(r):
    return [
        [
            _S(
                (0.55, 0.0), (0.3, 0.3), (0.12, 0.66), (0.18, 0.93), (0.4, 1.0), (0.6, 0.83),
                (0.55, 0.6), (0.32, 0.56), (0.14, 0.7),
            )
        ]
    ]


def _s7_plain(r):
    start = [(0.0, _u(r, 0.08, 0.15))] if r.random() < 0.3 else []
    return [[_L(*start, (0.0, 0.0), (0.65, 0.0)), _L((_u(r, 0.2, 0.32), 1.0))]]


def _s7_crossbar(r):
    foot = _u(r, 0.2, 0.3)
    mid = (0.65 + foot) / 2
    half = _u(r, 0.16, 0.24)
    y = _u(r, 0.45, 0.55)
    return [
        [_L((0.0, 0.0), (0.65, 0.0), (foot, 1.0))],
        [_L((mid - half, y + 0.02), (mid + half, y - 0.02))],
    ]


def _s7_curved_top(r):
    return [
        [
            _S((0.0, 0.14), (0.15, 0.03), (0.35, 0.07), (0.55, 0.06), (0.7, 0.0)),
            _S((0.5, 0.4), (0.37, 0.72), (0.3, 1.0)),
        ]
    ]


def _s8_onestroke(r):
    return [
        [
            _S(
                (0.58, 0.1), (0.33, 0.0), (0.09, 0.12), (0.14, 0.32), (0.35, 0.47), (0.6, 0.62),
                (0.64, 0.85), (0.38, 1.0), (0.1, 0.88), (0.11, 0.67), (0.35, 0.5), (0.55, 0.32), (0.58, 0.12),
            )
        ]
    ]


def _s8_two_loops(r):
    return [
        [_O(*_arc(0.33, 0.24, 0.22, 0.24, 90, 360, step=60)[:-1])],
        [_O(*_arc(0.33, 0.74, 0.28, 0.26, 90, 360, step=60)[:-1])],
    ]


def _loop9():
    return _S((0.62, 0.2), (0.4, 0.0), (0.12, 0.08), (0.08, 0.32), (0.33, 0.45), (0.58, 0.36), (0.63, 0.14))


def _s9_plain(r):
    return [[_loop9(), _L((_u(r, 0.55, 0.65), 1.0))]]


def _s9_curled(r):
    return [[_loop9(), _S((0.63, 0.55), (0.56, 0.88), (0.38, 1.0), (0.18, 0.95), (0.1, 0.86))]]


def _s9_two_strokes(r):
    return [
        [_O(*_arc(0.33, 0.24, 0.3, 0.24, 0, 360, step=60)[:-1])],
        [_L((0.64, 0.12), (_u(r, 0.55, 0.64), 1.0))],
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
    strokes = [_build_stroke(pieces, rng, noise) for pieces in template(rng)]
    aspect = _u(rng, 0.75, 1.25)
    slant = _u(rng, -0.25, 0.3)  # x shift per unit of height, positive leans right
    out = []
    for s in strokes:
        s = s.copy()
        s[:, 0] = s[:, 0] * aspect + slant * (1.0 - s[:, 1])
        out.append(s)
    return out


# ================================================================================================
# The pen: render strokes like the canvas (round caps and joins, anti-aliased)
# ================================================================================================

_PEN_COLOURS = np.array(
    [
        (0, 0, 0), (31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
        (23, 190, 207), (227, 119, 194), (140, 86, 75), (0, 0, 255), (255, 0, 0), (0, 128, 0),
        (128, 0, 128), (50, 50, 50), (0, 90, 160), (200, 0, 120),
    ],
    dtype=np.float64,
)
_LIGHT_BACKGROUNDS = np.array(
    [
        (255, 255, 255), (250, 250, 250), (245, 245, 240), (255, 253, 231), (240, 244, 255),
        (238, 238, 238), (255, 248, 240), (235, 250, 240), (250, 240, 245), (230, 230, 230),
    ],
    dtype=np.float64,
)


def _luma(rgb) -> float:
    r, g, b = rgb[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _colours(scheme: str, rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(pen RGB, background RGB or None for transparent) of a colour scheme."""
    if scheme == "black-on-white":
        return (0, 0, 0), (255, 255, 255)
    if scheme == "white-on-black":
        return (255, 255, 255), (0, 0, 0)
    if scheme == "colour-on-light":
        bg = _LIGHT_BACKGROUNDS[rng.integers(len(_LIGHT_BACKGROUNDS))]
        while True:
            pen = _PEN_COLOURS[rng.integers(len(_PEN_COLOURS))]
            if _luma(bg) - _luma(pen) >= 70:
                break
        return tuple(int(v) for v in pen), tuple(int(v) for v in bg)
    if scheme == "colour-on-transparent":
        if rng.random() < 0.15:  # a white pen on the canvas' own (separate) dark background layer
            return (255, 255, 255), None
        return tuple(int(v) for v in _PEN_COLOURS[rng.integers(len(_PEN_COLOURS))]), None
    raise ValueError(f"unknown colour scheme {scheme!r}; choose from {', '.join(SCHEMES)}")


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def render_with_meta(
    strokes: Iterable[np.ndarray],
    rng: np.random.Generator,
    *,
    size: int = CANVAS,
    width: float | None = None,
    height_frac: float | None = None,
    rotation: float | None = None,
    scheme: str | None = None,
    wobble: float = 0.012,
    width_jitter: float = 0.0,
    supersample: int = 2,
) -> tuple[np.ndarray, dict[str, Any]]:
    """`render` that also returns what it drew: scheme, colours, width, height, rotation, ink box."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in strokes]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        raise ValueError("nothing to draw: no strokes")
    # --- random choices, always in the same order so a seed reproduces the drawing ----------------
    w_canvas = float(rng.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1)) if width is None else float(width)
    hf = float(rng.uniform(*HEIGHT_RANGE)) if height_frac is None else float(height_frac)
    rot = float(rng.uniform(-ROTATION_DEG, ROTATION_DEG)) if rotation is None else float(rotation)
    scheme = SCHEMES[int(rng.integers(len(SCHEMES)))] if scheme is None else scheme
    pen, bg = _colours(scheme, rng)
    phase = rng.uniform(0, 2 * np.pi, 4)
    freq = rng.uniform(1.0, 2.5, 4)
    amp = wobble * rng.uniform(0.3, 1.0, 2)
    pos = rng.random(2)
    # --- geometry -------------------------------------------------------------------------------
    allpts = np.vstack(strokes)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    span = max(float(hi[1] - lo[1]), float(hi[0] - lo[0]), 1e-6)
    centre = (lo + hi) / 2
    th = math.radians(rot)
    rot_m = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    moved = []
    for s in strokes:
        p = (s - centre) / span
        if wobble:  # slow hand tremor: a smooth displacement field
            p = p + np.stack(
                [
                    amp[0] * np.sin(freq[0] * 2 * np.pi * p[:, 1] + phase[0]) * np.cos(freq[1] * p[:, 0] + phase[1]),
                    amp[1] * np.sin(freq[2] * 2 * np.pi * p[:, 0] + phase[2]) * np.cos(freq[3] * p[:, 1] + phase[3]),
                ],
                axis=1,
            )
        moved.append(p @ rot_m.T)
    allpts = np.vstack(moved)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    h = max(float(hi[1] - lo[1]), 1e-6)
    w = float(hi[0] - lo[0])
    limit = 0.98 * CANVAS
    scale = (hf * CANVAS - w_canvas) / h
    if w * scale + w_canvas > limit:  # too wide to fit: shrink (only wide drawings, e.g. "42")
        scale = (limit - w_canvas) / max(w, 1e-6)
    scale = max(scale, 0.0)
    ink_w, ink_h = w * scale + w_canvas, h * scale + w_canvas
    ox = pos[0] * (CANVAS - ink_w) + w_canvas / 2
    oy = pos[1] * (CANVAS - ink_h) + w_canvas / 2
    k = size / CANVAS * supersample  # canvas px -> supersampled output px
    big = size * supersample
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    pen_px = w_canvas * k
    for p in moved:
        q = ((p - lo) * scale + (ox, oy)) * k
        _draw_stroke(draw, q, pen_px, width_jitter, rng)
    if supersample > 1:
        img = img.reduce(supersample)
    out = _composite(img, pen, bg)
    meta = {
        "scheme": scheme,
        "pen": _hex(pen),
        "background": _hex(bg) if bg is not None else "transparent",
        "width": w_canvas,
        "height_frac": round(ink_h / CANVAS, 4),
        "rotation": round(rot, 2),
        "bbox": [round(v * size / CANVAS, 1) for v in (ox - w_canvas / 2, oy - w_canvas / 2, ink_w, ink_h)],
    }
    return out, meta


def _draw_stroke(draw: ImageDraw.ImageDraw, q: np.ndarray, pen_px: float, width_jitter: float, rng) -> None:
    """One pen stroke: a wide line with round joins plus a disc at each end (round caps)."""
    r = pen_px / 2
    if len(q) == 1 or float(np.abs(q - q[0]).max()) < 0.5:
        x, y = q[0]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return
    if width_jitter <= 0:
        # a wide polyline plus a disc on every vertex = round caps and round joins, exactly
        # (PIL's own joint="curve" does the same far more slowly, in Python)
        draw.line(q.ravel().tolist(), fill=255, width=max(1, round(float(pen_px))))
        for x, y in q.tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return
    # pen-speed variation: slow (curvy) parts a little thicker, plus a slow random drift
    seg = np.diff(q, axis=0)
    ang = np.arctan2(seg[:, 1], seg[:, 0])
    turn = np.abs(np.angle(np.exp(1j * np.diff(ang)))) if len(ang) > 1 else np.zeros(0)
    turn = np.r_[0.0, turn, 0.0]
    drift = np.sin(np.linspace(0, rng.uniform(1, 3) * np.pi, len(q)) + rng.uniform(0, 2 * np.pi))
    factor = 1.0 + width_jitter * (0.6 * drift + 0.8 * np.clip(turn, 0, 1.0) - 0.2)
    radii = np.clip(r * factor, 1.0, None)
    for i in range(len(q) - 1):
        wpx = round(float(radii[i] + radii[i + 1]))
        draw.line((*q[i], *q[i + 1]), fill=255, width=max(1, wpx))
    for (x, y), rr in zip(q, radii):
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)


def _composite(cov: Image.Image, pen, bg) -> np.ndarray:
    """RGBA uint8 from a coverage map ("L" image): pen over background, or pen + alpha if bg is None."""
    if bg is None:  # what a transparent canvas layer sends: colour where drawn, alpha = coverage
        chans = [cov.point([0] + [int(pen[ch])] * 255) for ch in range(3)] + [cov]
    else:
        ramp = np.arange(256)
        chans = [
            cov.point(((int(bg[ch]) * (255 - ramp) + int(pen[ch]) * ramp + 127) // 255).tolist()) for ch in range(3)
        ] + [Image.new("L", cov.size, 255)]
    return np.array(Image.merge("RGBA", chans))  # a writable copy


def render(strokes: Iterable[np.ndarray], rng: np.random.Generator, **kwargs) -> np.ndarray:
    """Draw strokes as a person would on the canvas; RGBA uint8 `(size, size, 4)`.

    Keyword arguments (each random when omitted): `size` (output side, default 280; widths and
    heights keep their canvas meaning at any size), `width` (pen width in canvas px, 8-25),
    `height_frac` (ink height / canvas, 0.35-0.85), `rotation` (degrees, +-15), `scheme` (one of
    `SCHEMES`); `wobble` (hand tremor, fraction of the drawing size), `width_jitter` (pen-speed
    width variation, 0 = constant like the canvas), `supersample` (anti-aliasing factor).
    """
    return render_with_meta(strokes, rng, **kwargs)[0]


def redraw(img28: np.ndarray, rng: np.random.Generator, **kwargs) -> np.ndarray:
    """Augmentation helper: a (28, 28) scanned digit re-drawn with a random pen; see `render`."""
    strokes = strokes_from_mnist(img28)
    if not strokes:
        raise ValueError("the image has no ink to redraw")
    return render(strokes, rng, **kwargs)


def ink_bbox(rgba: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive box of the pixels that differ from the background (None if blank)."""
    a = np.asarray(rgba)
    if a[..., 3].min() < 255:  # transparent background: ink is alpha
        ink = a[..., 3] > 0
    else:
        corner = a[0, 0, :3].astype(np.int16)
        ink = np.abs(a[..., :3].astype(np.int16) - corner).max(axis=-1) > 0
    if not ink.any():
        return None
    ys = np.flatnonzero(ink.any(axis=1))
    xs = np.flatnonzero(ink.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def to_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGBA drawing, as the browser sends it."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgba, dtype=np.uint8), "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ================================================================================================
# Data sets: drawn digits and scribbles, deterministic per seed
# ================================================================================================

SOURCES = ("mnist-test", "styles", "mixed")
STYLE_SHARE = 0.2  #: share of style-template digits in the "mixed" source
MIN_FIDELITY = 0.85  #: traced MNIST digits below this (a lost loop or stroke) are skipped
MAX_PEN_RATIO = 0.23  #: scans whose pen is wider than this share of the digit are skipped (~3 %)


def scan_pen_ratio(img28: np.ndarray) -> float:
    """Pen width of a scanned digit relative to its size (MNIST median ~0.14).

    Very thick scans (> MAX_PEN_RATIO, the top ~3 %) are blobs whose skeleton is unreliable: loops
    and arms melt into the ink, so their traces are left out of the evaluation set.
    """
    a = np.asarray(img28, dtype=np.float64).reshape(28, 28)
    if a.max(initial=0) <= 0:
        return 0.0
    inked = a > 0.4 * a.max()
    skel = skeletonize(inked)
    if not skel.any():
        return 0.0
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return 2.0 * float(ndimage.distance_transform_edt(inked)[skel].mean()) / extent


def _mnist_test_digits(directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official 10k MNIST test images (uint8 (N, 28, 28)) and labels, via `digitlab.data`."""
    from digitlab.data import load_mnist

    images, labels = load_mnist("test", directory=directory)
    return images, labels


def _item_rng(seed: int, index: int, salt: int) -> np.random.Generator:
    """Each drawing has its own generator: drawing i is the same whatever `count` is."""
    return np.random.default_rng([salt, int(seed), int(index)])


def drawn_dataset(
    count: int,
    seed: int = 0,
    source: str = "mixed",
    *,
    as_png: bool = False,
    size: int = CANVAS,
    digits: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    **render_kwargs,
) -> tuple[list, np.ndarray, list[dict[str, Any]]]:
    """`count` digits drawn like on the canvas: (images, labels, meta); the same for the same seed.

    `source`: "mnist-test" (MNIST *test* digits traced into strokes; no model trains on them),
    "styles" (the parametric `STYLES`, rare styles as often as ordinary ones) or "mixed"
    (STYLE_SHARE of styles, the rest MNIST test digits). MNIST test digits are taken in a seeded
    random order without repeats (up to 10,000); very thick scans (`scan_pen_ratio` >
    MAX_PEN_RATIO) and unfaithful traces (`stroke_fidelity` < MIN_FIDELITY) are skipped (~4 %). `digits=(images, labels)` replaces the MNIST
    test set (tests, or training digits for augmentation). Images are RGBA arrays
    `(size, size, 4)`, or PNG bytes with `as_png=True`. `meta[i]` says how image i was made:
    source, MNIST index or style name, scheme, pen and background colours, width, height, rotation.
    `progress(n)` is called after each image.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    if source != "styles" and count:
        images28, labels28 = digits if digits is not None else _mnist_test_digits()
        order = np.random.default_rng([1, int(seed)]).permutation(len(images28))
    next_mnist = 0
    out: list = []
    labels = np.empty(count, dtype=np.int64)
    meta: list[dict[str, Any]] = []
    for i in range(count):
        rng = _item_rng(seed, i, 2)
        use_style = source == "styles" or (source == "mixed" and rng.random() < STYLE_SHARE)
        if use_style:
            digit = int(rng.integers(10))
            names = [n for n, (d, _, _) in STYLES.items() if d == digit]
            style = names[int(rng.integers(len(names)))]
            strokes = style_digit(digit, rng, style=style)
            info: dict[str, Any] = {"source": "styles", "style": style}
        else:
            while True:
                if next_mnist >= len(order):  # more drawings than digits: go round again
                    order = np.concatenate([order, np.random.default_rng([1, int(seed), next_mnist]).permutation(len(images28))])
                k = int(order[next_mnist])
                next_mnist += 1
                if scan_pen_ratio(images28[k]) > MAX_PEN_RATIO:
                    continue
                strokes = strokes_from_mnist(images28[k])
                if strokes and stroke_fidelity(strokes, images28[k]) >= MIN_FIDELITY:
                    break
            digit = int(labels28[k])
            info = {"source": "mnist-test" if digits is None else "digits", "index": k}
        img, m = render_with_meta(strokes, rng, size=size, **render_kwargs)
        info.update(m)
        info["label"] = digit
        out.append(to_png(img) if as_png else img)
        labels[i] = digit
        meta.append(info)
        if progress is not None:
            progress(1)
    return out, labels, meta


SCRIBBLE_KINDS = ("curves", "zigzag", "letter", "two-digits", "blob", "dots")
_SCRIBBLE_WEIGHTS = np.array([0.28, 0.12, 0.25, 0.15, 0.1, 0.1])


def _random_curve(rng, n_pts: int, box=(1.0, 1.0)) -> np.ndarray:
    pts = rng.random((n_pts, 2)) * box
    return _catmull_rom(pts)


def _spiral():
    return [[_S(*[(0.5 + t / 12 * math.cos(t), 0.5 + t / 12 * math.sin(t)) for t in np.linspace(0.3, 6 * math.pi, 19)])]]


#: letters and symbols that are not digits (no O, I, l, S, Z, B, G, b, q, g, T look-alikes);
#: each is a list of stroke templates (see `STYLES`)
_LETTERS: dict[str, Callable[[], list]] = {
    "A": lambda: [[_L((0, 1), (0.35, 0), (0.7, 1))], [_L((0.15, 0.6), (0.55, 0.6))]],
    "H": lambda: [[_L((0, 0), (0, 1))], [_L((0.6, 0), (0.6, 1))], [_L((0, 0.5), (0.6, 0.5))]],
    "K": lambda: [[_L((0, 0), (0, 1))], [_L((0.55, 0), (0.02, 0.55), (0.6, 1))]],
    "M": lambda: [[_L((0, 1), (0.05, 0), (0.35, 0.6), (0.65, 0), (0.7, 1))]],
    "N": lambda: [[_L((0, 1), (0, 0), (0.6, 1), (0.6, 0))]],
    "W": lambda: [[_L((0, 0), (0.2, 1), (0.4, 0.3), (0.6, 1), (0.8, 0))]],
    "X": lambda: [[_L((0, 0), (0.7, 1))], [_L((0.7, 0), (0, 1))]],
    "E": lambda: [[_L((0.6, 0), (0, 0), (0, 1), (0.6, 1))], [_L((0, 0.5), (0.45, 0.5))]],
    "R": lambda: [[_L((0, 1), (0, 0)), _S((0.35, 0.05), (0.45, 0.25), (0.3, 0.45), (0.0, 0.5)), _L((0.5, 1))]],
    "Y": lambda: [[_L((0, 0), (0.35, 0.5), (0.7, 0))], [_L((0.35, 0.5), (0.35, 1))]],
    "L": lambda: [[_L((0, 0), (0, 1), (0.6, 1))]],
    "#": lambda: [[_L((0.25, 0), (0.15, 1))], [_L((0.65, 0), (0.55, 1))], [_L((0, 0.33), (0.8, 0.33))],
                  [_L((0, 0.67), (0.8, 0.67))]],
    "*": lambda: [[_L((0.5, 0), (0.5, 1))], [_L((0.07, 0.25), (0.93, 0.75))], [_L((0.93, 0.25), (0.07, 0.75))]],
    "+": lambda: [[_L((0.5, 0), (0.5, 1))], [_L((0, 0.5), (1, 0.5))]],
    "check": lambda: [[_L((0, 0.6), (0.3, 1), (0.9, 0))]],
    "heart": lambda: [[_S((0.5, 0.25), (0.3, 0.02), (0.05, 0.1), (0.05, 0.4), (0.5, 1.0)),
                       _S((0.95, 0.4), (0.95, 0.1), (0.7, 0.02), (0.5, 0.25))]],
    "triangle": lambda: [[_L((0.5, 0), (1, 0.9), (0, 0.9), (0.5, 0))]],
    "square": lambda: [[_L((0, 0), (0.9, 0.02), (0.88, 0.9), (0.02, 0.88), (0, 0))]],
    "star": lambda: [[_L((0.2, 1), (0.5, 0), (0.8, 1), (0.02, 0.38), (0.98, 0.38), (0.2, 1))]],
    "spiral": _spiral,
    "smiley": lambda: [[_O(*_arc(0.5, 0.5, 0.5, 0.5, 0, 360, step=45)[:-1])], [_L((0.33, 0.33))], [_L((0.67, 0.33))],
                       [_S(*_arc(0.5, 0.5, 0.3, 0.3, 200, 340, step=35))]],
    "loops": lambda: [[_S(*[(0.25 * k + 0.15 * math.cos(t), 0.6 - 0.4 * math.sin(t))
                            for k in range(3) for t in np.linspace(-0.5 * math.pi, 1.5 * math.pi, 7)[:-1]])]],
    "infinity": lambda: [[_O(*[(0.5 + 0.5 * math.sin(t), 0.5 + 0.25 * math.sin(2 * t))
                               for t in np.linspace(0, 2 * math.pi, 13)[:-1]])]],
    "arrow": lambda: [[_L((0, 0.5), (1, 0.5))], [_L((0.7, 0.2), (1, 0.5), (0.7, 0.8))]],
}


def _letter(rng) -> tuple[str, list]:
    name = list(_LETTERS)[int(rng.integers(len(_LETTERS)))]
    return name, [_build_stroke(pieces, rng, 0.02) for pieces in _LETTERS[name]()]


def _scribble(kind: str, rng: np.random.Generator) -> tuple[list, dict[str, Any]]:
    info: dict[str, Any] = {"kind": kind}
    if kind == "curves":
        n = int(rng.integers(1, 5))
        strokes = [_random_curve(rng, int(rng.integers(3, 8)), (rng.uniform(0.5, 1.5), 1.0)) for _ in range(n)]
    elif kind == "zigzag":
        teeth = int(rng.integers(3, 9))
        x = np.linspace(0, rng.uniform(0.6, 1.6), 2 * teeth + 1)
        y = np.where(np.arange(len(x)) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.08, len(x))
        strokes = [_polyline(np.stack([x, y], axis=1))]
        if rng.random() < 0.5:  # a vertical zig-zag
            strokes = [s[:, ::-1] for s in strokes]
    elif kind == "letter":
        name, strokes = _letter(rng)
        info["letter"] = name
    elif kind == "two-digits":
        a, b = int(rng.integers(10)), int(rng.integers(10))
        left, right = style_digit(a, rng), style_digit(b, rng)
        shift = max(s[:, 0].max() for s in left) + rng.uniform(0.1, 0.35) - min(s[:, 0].min() for s in right)
        strokes = left + [s + (shift, rng.uniform(-0.1, 0.1)) for s in right]
        info["digits"] = f"{a}{b}"
    elif kind == "blob":  # a filled-in shape: the pen going back and forth over an area
        n = int(rng.integers(6, 16))
        t = np.linspace(0, 1, n)
        rx, ry = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)
        ys = 0.5 + (t - 0.5) * 2 * ry
        half = rx * np.sqrt(np.clip(1 - ((ys - 0.5) / ry) ** 2, 0.05, 1))
        xs = 0.5 + np.where(np.arange(n) % 2 == 0, -half, half)
        pts = np.stack([xs, ys], axis=1) + rng.normal(0, 0.03, (n, 2))
        strokes = [_catmull_rom(pts)]
        info["passes"] = n
    elif kind == "dots":
        n = int(rng.integers(3, 9))
        strokes = []
        for p in rng.random((n, 2)):
            if rng.random() < 0.6:
                strokes.append(p[None, :])
            else:
                strokes.append(_polyline(np.array([p, p + rng.normal(0, 0.06, 2)])))
        info["dots"] = n
    else:
        raise ValueError(f"unknown scribble kind {kind!r}; choose from {', '.join(SCRIBBLE_KINDS)}")
    return strokes, info


def scribbles(
    count: int,
    seed: int = 0,
    *,
    kinds: Sequence[str] | None = None,
    as_png: bool = False,
    size: int = CANVAS,
    progress: Callable[[int], None] | None = None,
    **render_kwargs,
) -> tuple[list, list[dict[str, Any]]]:
    """`count` drawings that are not one digit, rendered with the same pen: (images, meta).

    Kinds: random smooth curves (1-4 strokes), zig-zags, letters and symbols (A, H, K, M, #, *,
    heart, spiral, smiley, ...), two digits side by side, filled blobs, scattered dots. A model
    should be unsure about these; `meta[i]["kind"]` says which is which.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    kinds = tuple(kinds) if kinds else SCRIBBLE_KINDS
    weights = np.array([_SCRIBBLE_WEIGHTS[SCRIBBLE_KINDS.index(k)] for k in kinds])
    weights = weights / weights.sum()
    out, meta = [], []
    for i in range(count):
        rng = _item_rng(seed, i, 3)
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        strokes, info = _scribble(kind, rng)
        img, m = render_with_meta(strokes, rng, size=size, **render_kwargs)
        info.update(m)
        out.append(to_png(img) if as_png else img)
        meta.append(info)
        if progress is not None:
            progress(1)
    return out, meta


# ================================================================================================
# Contact sheet
# ================================================================================================


def _checkerboard(size: int, cell: int = 8) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 205, 180).astype(np.uint8)
    return Image.fromarray(board, "L").convert("RGBA")


def save_contact_sheet(
    path: str | Path,
    images: Sequence,
    labels: Sequence | None = None,
    *,
    cols: int = 8,
    cell: int = 70,
    gap: int = 4,
) -> Path:
    """Save a grid of drawings (RGBA arrays or PNG bytes), each downscaled to `cell` px.

    Transparent pixels show as a grey checkerboard; `labels` (digits or short strings) are printed
    in each cell's corner. Returns the path.
    """
    from PIL import ImageFont

    path = Path(path)
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    sheet = Image.new("RGB", (cols * (cell + gap) + gap, rows * (cell + gap) + gap), (90, 90, 90))
    board = _checkerboard(cell, max(4, cell // 9))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        pic = Image.open(io.BytesIO(im)) if isinstance(im, (bytes, bytearray)) else Image.fromarray(np.asarray(im))
        pic = pic.convert("RGBA").resize((cell, cell), Image.LANCZOS)
        tile = board.copy()
        tile.alpha_composite(pic)
        x, y = gap + (i % cols) * (cell + gap), gap + (i // cols) * (cell + gap)
        sheet.paste(tile.convert("RGB"), (x, y))
        if labels is not None:
            text = str(labels[i])
            box = draw.textbbox((x + 2, y + 1), text, font=font)
            draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(255, 236, 140))
            draw.text((x + 2, y + 1), text, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    if path.stat().st_size > 300_000:  # keep docs light: a 256-colour palette is plenty here
        sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


# ================================================================================================
# Evaluation: PNG bytes -> the API's preprocessing -> each model
# ================================================================================================

CONFIDENCE_LEVELS = (0.5, 0.7, 0.9)


def _bucket(value: float, buckets, fmt) -> str:
    for lo, hi in buckets:
        if value <= hi + 1e-9:
            return fmt(lo, hi)
    lo, hi = buckets[-1]
    return fmt(lo, hi)


def _width_bucket(width: float) -> str:
    return _bucket(width, WIDTH_BUCKETS, lambda lo, hi: f"{lo}-{hi} px")


def _height_bucket(frac: float) -> str:
    return _bucket(frac, HEIGHT_BUCKETS, lambda lo, hi: f"{round(lo * 100)}-{round(hi * 100)} %")


def _preprocess_all(pngs: Sequence[bytes], preprocess: Callable, progress) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, 784) float32, ok (n,) bool): images the preprocessing refused are zeros and not ok."""
    from digitlab.errors import DigitlabError

    X = np.zeros((len(pngs), 784), dtype=np.float32)
    ok = np.ones(len(pngs), dtype=bool)
    for i, png in enumerate(pngs):
        try:
            X[i] = np.asarray(preprocess(png), dtype=np.float32).reshape(784)
        except DigitlabError:
            ok[i] = False
        if progress is not None:
            progress(1)
    return X, ok


def _predict(fn: Callable, X: np.ndarray, chunk: int = 1000) -> np.ndarray:
    if len(X) == 0:
        return np.zeros((0, 10))
    return np.vstack([np.asarray(fn(X[i : i + chunk]), dtype=np.float64) for i in range(0, len(X), chunk)])


def _accuracy_by(keys: Sequence[str], correct: np.ndarray, order: Sequence[str] | None = None) -> dict:
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    names = [k for k in (order or sorted(groups)) if k in groups]
    return {k: {"accuracy": round(float(correct[groups[k]].mean()), 4), "n": len(groups[k])} for k in names}


def evaluate_drawn(
    predict_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    count: int = 2000,
    seed: int = 0,
    *,
    source: str = "mixed",
    scribble_count: int = 0,
    preprocess: Callable[[bytes], np.ndarray] | None = None,
    digits: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str, int], None] | None = None,
    detector: Any = None,
) -> dict[str, Any]:
    """Score models on drawn digits the way the API sees them: PNG bytes -> `preprocess` -> model.

    `predict_fns`: model name -> `predict_proba((n, 784) float32) -> (n, 10)`. `preprocess`
    defaults to `digitlab.preprocess.to_mnist`; an image it refuses (EmptyImageError, ...) counts as
    a wrong answer (and, for a scribble, as an unsure one). `scribble_count` non-digit drawings
    measure how unsure the models are where they should be. `progress(stage, n)` is called as work
    is done (stages "render", "preprocess"). Returns a JSON-ready dict (see docs/drawn.md).
    """
    import time

    if preprocess is None:
        from digitlab.preprocess import to_mnist as preprocess

    def tick(stage):
        return (lambda n: progress(stage, n)) if progress is not None else None

    t0 = time.perf_counter()
    pngs, labels, meta = drawn_dataset(count, seed, source, as_png=True, digits=digits, progress=tick("render"))
    s_pngs, s_meta = scribbles(scribble_count, seed, as_png=True, progress=tick("render"))
    t1 = time.perf_counter()
    X, ok = _preprocess_all(pngs, preprocess, tick("preprocess"))
    SX, s_ok = _preprocess_all(s_pngs, preprocess, tick("preprocess"))
    t2 = time.perf_counter()
    n_render = count + scribble_count
    result: dict[str, Any] = {
        "count": count,
        "seed": seed,
        "source": source,
        "scribble_count": scribble_count,
        "preprocess_refused": int((~ok).sum()),
        "scribbles_refused": int((~s_ok).sum()),
        "seconds": {"render": round(t1 - t0, 2), "preprocess": round(t2 - t1, 2)},
        "drawings_per_second": round(n_render / (t1 - t0), 1) if n_render and t1 > t0 else None,
        "models": {},
    }
    schemes = [m["scheme"] for m in meta]
    sources = [m["source"] for m in meta]
    widths = [_width_bucket(m["width"]) for m in meta]
    heights = [_height_bucket(m["height_frac"]) for m in meta]
    digits_k = [str(int(v)) for v in labels]
    styles = [m.get("style", "") for m in meta]
    style_idx = [i for i, s in enumerate(styles) if s]
    for name, fn in predict_fns.items():
        t = time.perf_counter()
        proba = _predict(fn, X)
        pred = np.where(ok, proba.argmax(axis=1) if count else np.zeros(0, dtype=int), -1)
        conf = np.where(ok, proba.max(axis=1) if count else np.zeros(0), 0.0)
        correct = pred == labels
        entry: dict[str, Any] = {
            "accuracy": round(float(correct.mean()), 4) if count else None,
            "n": count,
            "by_scheme": _accuracy_by(schemes, correct, SCHEMES),
            "by_source": _accuracy_by(sources, correct, ["mnist-test", "digits", "styles"]),
            "by_width": _accuracy_by(widths, correct, [_width_bucket(hi) for _, hi in WIDTH_BUCKETS]),
            "by_height": _accuracy_by(heights, correct, [_height_bucket(hi) for _, hi in HEIGHT_BUCKETS]),
            "by_digit": _accuracy_by(digits_k, correct, [str(d) for d in range(10)]),
            "by_style": _accuracy_by([styles[i] for i in style_idx], correct[style_idx], list(STYLES)),
            "confusions": _top_confusions(labels, pred),
            "confidence": {
                "digits_mean_max": round(float(conf.mean()), 4) if count else None,
                "digits_below": {str(c): round(float((conf < c).mean()), 4) for c in CONFIDENCE_LEVELS} if count else {},
            },
        }
        if scribble_count:
            s_proba = _predict(fn, SX)
            s_conf = np.where(s_ok, s_proba.max(axis=1), 0.0)
            entry["confidence"]["scribbles_mean_max"] = round(float(s_conf.mean()), 4)
            entry["confidence"]["scribbles_below"] = {
                str(c): round(float((s_conf < c).mean()), 4) for c in CONFIDENCE_LEVELS
            }
            kinds = [m["kind"] for m in s_meta]
            entry["confidence"]["scribbles_below_0.7_by_kind"] = {
                k: round(float((s_conf[[i for i, x in enumerate(kinds) if x == k]] < 0.7).mean()), 4)
                for k in SCRIBBLE_KINDS
                if k in kinds
            }
        entry["seconds"] = round(time.perf_counter() - t, 2)
        result["models"][name] = entry
    if detector is not None and scribble_count and count:
        # the API's `uncertain` rule (digitlab.uncertainty): flagged scribbles and flagged correct answers
        from digitlab.uncertainty import uncertainty_rates

        rates = uncertainty_rates(detector, predict_fns, X, labels, SX, ok=ok, scribbles_ok=s_ok)
        for name in predict_fns:
            result["models"][name]["uncertain"] = rates[name]
    return result


def _top_confusions(labels: np.ndarray, pred: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
    pairs: dict[tuple[int, int], int] = {}
    for t, p in zip(labels.tolist(), pred.tolist()):
        if t != p:
            pairs[(t, p)] = pairs.get((t, p), 0) + 1
    top = sorted(pairs.items(), key=lambda kv: -kv[1])[:k]
    return [{"true": t, "predicted": p if p >= 0 else None, "n": n} for (t, p), n in top]


def evaluate_drawn_command(models: Sequence[str] | None, as_json: bool = False, count: int = 2000, seed: int = 0) -> int:
    """`digitlab evaluate --drawn`: per-model accuracy on drawn digits (and unsureness on scribbles)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from digitlab.core.config import get_settings
    from digitlab.errors import DigitlabError
    from digitlab.models import ModelRegistry

    if count <= 0:
        raise DigitlabError(f"--count must be at least 1, not {count}.", code="invalid_argument")
    settings = get_settings()
    registry = ModelRegistry(settings.model_dir).load_all()
    status = registry.status()
    names = list(models) if models else registry.ready_names()
    if not names:
        raise DigitlabError(
            f"no trained model in {settings.model_dir}: run `digitlab train` first.", code="no_models"
        )
    for name in names:
        if name not in status:
            raise DigitlabError(f"unknown model {name!r}: choose from {', '.join(status)}.", code="unknown_model")
        if status[name] != "ready":
            why = registry.errors().get(name) or f"it is {status[name]}: run `digitlab train {name}`."
            raise DigitlabError(f"model {name!r} is not available: {why}", code="model_not_ready")
    fns = {name: registry.get(name).predict_proba for name in names}
    scribble_count = max(count // 4, 1)
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as bar:
        tasks = {
            "render": bar.add_task("drawing digits and scribbles", total=count + scribble_count),
            "preprocess": bar.add_task("preprocessing (API path)", total=count + scribble_count),
        }
        try:
            from digitlab.uncertainty import load_detector

            detector = load_detector(settings.model_dir)
        except DigitlabError as exc:
            err.print(f"not-a-digit detector not loaded ({exc}); uncertainty rates left out")
            detector = None
        result = evaluate_drawn(
            fns, count, seed, scribble_count=scribble_count, detector=detector,
            progress=lambda stage, n: bar.advance(tasks[stage], n),
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_tables(result, Console())
    return 0


def _pct(entry: dict | None) -> str:
    if not entry or entry.get("accuracy") is None:
        return "-"
    return f"{100 * entry['accuracy']:.1f}%"


def _print_tables(result: dict[str, Any], console) -> None:
    from rich.table import Table

    models = list(result["models"])
    first = result["models"][models[0]]
    table = Table(
        title=f"Drawn-digit accuracy: {result['count']} canvas-style drawings, seed {result['seed']}",
        caption="PNG bytes -> preprocess.to_mnist -> model (the API's path)",
    )
    table.add_column("group")
    table.add_column("n", justify="right")
    for m in models:
        table.add_column(m, justify="right")
    table.add_row("overall", str(first["n"]), *[_pct(result["models"][m]) for m in models], style="bold")
    for title, key in (("scheme", "by_scheme"), ("source", "by_source"), ("pen width", "by_width"),
                       ("ink height", "by_height"), ("digit", "by_digit"), ("style", "by_style")):
        groups = first[key]
        for i, (group, info) in enumerate(groups.items()):
            table.add_row(
                f"{title}: {group}" if i == 0 else f"  {group}", str(info["n"]),
                *[_pct(result["models"][m][key].get(group)) for m in models],
                end_section=i == len(groups) - 1,
            )
    console.print(table)
    conf = Table(title="How unsure: share of answers whose top probability is below a level")
    conf.add_column("answers")
    for m in models:
        conf.add_column(m, justify="right")
    kinds = ["digits"] + (["scribbles"] if result["scribble_count"] else [])
    for kind in kinds:
        n = result["count"] if kind == "digits" else result["scribble_count"]
        for i, c in enumerate(CONFIDENCE_LEVELS):
            cells = [f"{100 * result['models'][m]['confidence'][kind + '_below'][str(c)]:.1f}%" for m in models]
            conf.add_row(f"{kind} ({n}), top p < {c}", *cells, end_section=i == len(CONFIDENCE_LEVELS) - 1)
    console.print(conf)
    if all("uncertain" in result["models"][m] for m in models):
        unsure = Table(title="The API's `uncertain` flag (docs/uncertainty.md)")
        unsure.add_column("share flagged")
        for m in models:
            unsure.add_column(m, justify="right")
        for label, key in (("scribbles", "scribbles_flagged"), ("correct digit answers", "correct_flagged"),
                           ("wrong digit answers", "wrong_flagged")):
            unsure.add_row(label, *[f"{100 * (result['models'][m]['uncertain'][key] or 0):.1f}%" for m in models])
        console.print(unsure)
    if result["preprocess_refused"] or result["scribbles_refused"]:
        console.print(
            f"preprocessing refused {result['preprocess_refused']} digit drawings (counted wrong) and "
            f"{result['scribbles_refused']} scribbles (counted unsure)."
        )
    console.print(
        f"rendered {result['count'] + result['scribble_count']} drawings in {result['seconds']['render']} s, "
        f"preprocessed in {result['seconds']['preprocess']} s"
    )
