"""Hand-made pen strokes of the ten digits, for driving the canvas from the browser tests.

Each digit is a list of strokes; a stroke is a polyline in a unit box (x right, y down) that
`points()` resamples every few pixels and maps into the 280x280 canvas, like a hand moving a mouse.
"""

from __future__ import annotations

import itertools
import math

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> Stroke:
    """Angles in degrees, 0 = right, 90 = down (y grows downwards)."""
    return [
        (
            cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


DIGITS: dict[int, list[Stroke]] = {
    0: [_arc(0.5, 0.5, 0.27, 0.4, -90, 275, 36)],
    1: [[(0.36, 0.24), (0.55, 0.1), (0.55, 0.9)]],
    2: [_arc(0.5, 0.33, 0.25, 0.22, 200, 390, 16) + [(0.22, 0.9), (0.8, 0.9)]],
    3: [_arc(0.48, 0.3, 0.24, 0.2, 210, 450, 18) + _arc(0.48, 0.7, 0.27, 0.2, 270, 510, 18)[1:]],
    4: [[(0.6, 0.1), (0.2, 0.62), (0.82, 0.62)], [(0.62, 0.32), (0.62, 0.92)]],
    5: [[(0.75, 0.1), (0.32, 0.1), (0.28, 0.45)] + _arc(0.48, 0.65, 0.27, 0.25, 225, 495, 20)[1:]],
    6: [[(0.7, 0.1), (0.45, 0.3), (0.28, 0.6)] + _arc(0.5, 0.68, 0.23, 0.22, 180, 540, 28)],
    7: [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.92)]],
    8: [_arc(0.5, 0.3, 0.2, 0.2, 90, 450, 24), _arc(0.5, 0.7, 0.25, 0.2, -90, 270, 24)],
    9: [_arc(0.48, 0.32, 0.23, 0.22, 0, 360, 28) + [(0.71, 0.32), (0.66, 0.92)]],
}


def points(
    stroke: Stroke, *, size: float = 280.0, margin: float = 40.0, step: float = 5.0
) -> list[tuple[float, float]]:
    """The stroke in canvas pixels, resampled every `step` px along its length."""
    scale = size - 2 * margin
    pts = [(margin + x * scale, margin + y * scale) for x, y in stroke]
    out = [pts[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        n = max(1, int(math.hypot(x1 - x0, y1 - y0) / step))
        out.extend((x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1))
    return out


#: A "#": no digit at all. The not-a-digit detector flags it, so every model's answer is `uncertain`.
NOT_A_DIGIT: list[Stroke] = [
    [(0.35, 0.1), (0.35, 0.9)],
    [(0.65, 0.1), (0.65, 0.9)],
    [(0.1, 0.35), (0.9, 0.35)],
    [(0.1, 0.65), (0.9, 0.65)],
]

#: A smiley: a face, two eyes, a smile. No digit; one shape (its eyes and smile lie inside the face).
SMILEY: list[Stroke] = [
    _arc(0.5, 0.5, 0.45, 0.45, 0, 360, 40),
    [(0.35, 0.33), (0.35, 0.42)],
    [(0.65, 0.33), (0.65, 0.42)],
    _arc(0.5, 0.55, 0.22, 0.18, 20, 160, 16),
]


def side_by_side(*shapes: list[Stroke]) -> list[Stroke]:
    """Several digits (or shapes) in one canvas, left to right, each in its own slot: "12" on the Draw page."""
    n = len(shapes)
    return [
        [((i + x) / n, 0.5 + (y - 0.5) / n) for x, y in stroke]
        for i, shape in enumerate(shapes)
        for stroke in shape
    ]


def canvas_png(strokes: list[Stroke], *, size: int = 280, width: int = 18, pen: str = "#1F2340") -> bytes:
    """The strokes as the Draw canvas paints them (a round pen on white), as a PNG."""
    import io

    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (size, size), "#FFFFFF")
    draw = ImageDraw.Draw(im)
    for stroke in strokes:
        pts = points(stroke, size=size)
        draw.line(pts, fill=pen, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=pen)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
