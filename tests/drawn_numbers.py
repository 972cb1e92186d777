"""Numbers written with a round pen on a white canvas, stroke by stroke (for the segmentation and /read tests)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

# digit strokes in a unit box (x right, y down); each digit is a list of strokes
STROKES = {
    "0": [
        [(0.5, 0.0), (0.15, 0.2), (0.1, 0.6), (0.35, 1.0), (0.7, 0.95), (0.9, 0.5), (0.8, 0.1), (0.5, 0.0)]
    ],
    "1": [[(0.55, 0.0), (0.5, 1.0)]],
    "2": [[(0.1, 0.2), (0.4, 0.0), (0.8, 0.1), (0.8, 0.4), (0.1, 1.0), (0.9, 1.0)]],
    "3": [[(0.1, 0.1), (0.5, 0.0), (0.8, 0.2), (0.45, 0.48), (0.85, 0.7), (0.6, 1.0), (0.1, 0.9)]],
    "4": [[(0.6, 0.0), (0.1, 0.65), (0.95, 0.65)], [(0.7, 0.35), (0.7, 1.0)]],  # two strokes
    "5": [
        [(0.85, 0.0), (0.25, 0.0)],
        [(0.22, 0.08), (0.15, 0.45), (0.6, 0.4), (0.85, 0.7), (0.6, 1.0), (0.1, 0.9)],
    ],
    "7": [[(0.1, 0.0), (0.9, 0.0), (0.35, 1.0)], [(0.35, 0.5), (0.85, 0.5)]],  # crossed 7
    "9": [[(0.85, 0.3), (0.5, 0.0), (0.15, 0.25), (0.45, 0.5), (0.85, 0.3), (0.8, 1.0)]],
    "/": [[(0.9, 0.0), (0.1, 1.0)]],  # a slash, as in "1/2": no digit
    "?": [[(0.1, 0.25), (0.3, 0.0), (0.75, 0.0), (0.9, 0.25), (0.5, 0.5), (0.5, 0.72)], [(0.5, 0.95), (0.52, 1.0)]],
    "!": [[(0.5, 0.0), (0.5, 0.7)], [(0.5, 0.95), (0.52, 1.0)]],
    ".": [[(0.45, 0.95), (0.5, 1.0)]],
    "(": [[(0.8, -0.1), (0.35, 0.2), (0.2, 0.5), (0.35, 0.8), (0.8, 1.1)]],  # brackets: no digits
    ")": [[(0.2, -0.1), (0.65, 0.2), (0.8, 0.5), (0.65, 0.8), (0.2, 1.1)]],
    "[": [[(0.8, -0.05), (0.3, -0.05), (0.3, 1.05), (0.8, 1.05)]],
    "]": [[(0.2, -0.05), (0.7, -0.05), (0.7, 1.05), (0.2, 1.05)]],
}
WIDTH = {"1": 0.2, "!": 0.2, ".": 0.15, "(": 0.3, ")": 0.3, "[": 0.3, "]": 0.3}


def draw_number(
    text: str, *, gap: float = 0.3, slant: float = 0.0, size: int = 160, lead: float = 0.0, extra=None, pen_width=0.1
) -> bytes:
    """`text` written with a round pen `pen_width` heights wide on a white canvas, digits `size` px high, `gap`
    heights apart."""
    width = int(size * (1.5 + lead + sum(WIDTH.get(c, 0.65) + gap for c in text)))
    im = Image.new("RGB", (width, int(size * 1.8)), "white")
    pen = ImageDraw.Draw(im)
    x = (0.5 + lead) * size  # `lead`: room on the left for `extra` marks
    y0 = 0.4 * size
    for c in text:
        w = WIDTH.get(c, 0.65) * size
        for stroke in STROKES[c]:
            pts = [(x + px * w + slant * (1 - py) * size, y0 + py * size) for px, py in stroke]
            pen.line(pts, fill="#1f2340", width=max(3, int(size * pen_width)), joint="curve")
        x += w + gap * size
    if extra:
        extra(pen, size)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
