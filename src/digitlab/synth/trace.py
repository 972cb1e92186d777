"""MNIST scans -> pen strokes: thin a scanned digit to its skeleton, trace it into smooth pen paths.

Lets evaluation and augmentation re-draw real MNIST digits with the canvas's pen (`redraw`).
One piece (just over 500 lines): thinning, graph tracing, pruning and stroke chaining are the steps of
one algorithm whose helpers share the skeleton's representation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from digitlab.synth.render import draw_stroke, render
from digitlab.synth.shapes import Strokes


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


def _follow(adj, seen: set, path: list, prev, cur, stop: Callable[[tuple[int, int]], bool]) -> None:
    """Extend `path` from `cur` (reached from `prev`) along unseen links, marking them seen, until a dead
    end or until `stop(pixel)` holds for the pixel just reached."""
    while True:
        nxt = [q for q in adj[cur] if q != prev and (cur, q) not in seen]
        if not nxt:
            return
        q = nxt[0]
        seen.add((cur, q))
        seen.add((q, cur))
        path.append(q)
        prev, cur = cur, q
        if stop(cur):
            return


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
            if m not in nodes:
                _follow(adj, seen, path, n, m, nodes.__contains__)
            edges.append(path)
    # cycles made only of degree-2 pixels (an "0" with no junction)
    for start, nb in adj.items():
        if len(nb) != 2 or any((start, q) in seen for q in nb):
            continue
        path = [start]
        _follow(adj, seen, path, None, start, start.__eq__)
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
        draw_stroke(draw, np.asarray(s) * 28 * ss, max(width, 1.0) * ss, 0.0, None)
    drawn = np.asarray(img.reduce(ss)) > 127
    if not drawn.any():
        return 0.0
    near_drawn = ndimage.distance_transform_edt(~drawn) <= tolerance
    near_scan = ndimage.distance_transform_edt(~scan) <= tolerance
    recall = float((scan & near_drawn).sum()) / max(int(scan.sum()), 1)
    precision = float((drawn & near_scan).sum()) / int(drawn.sum())
    return min(recall, precision)


def redraw(img28: np.ndarray, rng: np.random.Generator, **kwargs) -> np.ndarray:
    """Augmentation helper: a (28, 28) scanned digit re-drawn with a random pen; see `render`."""
    strokes = strokes_from_mnist(img28)
    if not strokes:
        raise ValueError("the image has no ink to redraw")
    return render(strokes, rng, **kwargs)

