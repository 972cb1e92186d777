"""The pen: strokes rendered like the app's 280x280 canvas (round caps and joins, any colour scheme).

Width 8-25 canvas px, ink height 35-85 % of the canvas, anywhere on it, rotated +-15 degrees.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from digitlab.synth.shapes import uniform

CANVAS = 280  #: side of the app's drawing canvas, in px; widths and heights below refer to it
WIDTH_RANGE = (8, 25)  #: pen width in canvas px (inclusive), uniform
HEIGHT_RANGE = (0.35, 0.85)  #: ink height as a fraction of the canvas, uniform
ROTATION_DEG = 15.0  #: rotation uniform in +-ROTATION_DEG
SCHEMES = ("black-on-white", "white-on-black", "colour-on-light", "colour-on-transparent")



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
        draw_stroke(draw, q, pen_px, width_jitter, rng)
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


def draw_stroke(draw: ImageDraw.ImageDraw, q: np.ndarray, pen_px: float, width_jitter: float, rng) -> None:
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
            d = d + rng.normal(0, uniform(rng, 0.004, 0.012) * size, d.shape)
            out.append(d)
        elif kind == "hooks":
            d = s
            for end in (0, -1):
                if rng.random() < 0.6:
                    a = uniform(rng, 0, 2 * math.pi)
                    hook = d[end] + np.array([math.cos(a), math.sin(a)]) * uniform(rng, 0.02, 0.06) * size
                    d = np.vstack([hook, d]) if end == 0 else np.vstack([d, hook])
            out.append(d)
        elif kind == "coarse":
            out.append(_resample(s, max(3, round(length / size * uniform(rng, 4, 9)))))
        else:  # uneven
            t = np.linspace(0, 1, len(s))[:, None]
            drift = np.sin(2 * math.pi * (t * uniform(rng, 0.5, 1.5) + rng.random(2))) * uniform(rng, 0.01, 0.03) * size
            out.append(s + drift)
    return out
