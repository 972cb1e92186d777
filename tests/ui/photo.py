"""A phone photo of a digit written on paper, made up for the upload tests: off-white paper lit unevenly,
ruled lines, a shadow, blue-black ink, sensor noise; PNG or JPEG (the UI accepts WebP and BMP too)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.special import expit


def photo_of_a_seven(width: int = 480, height: int = 640, seed: int = 7, fmt: str = "PNG", noise: float = 4) -> bytes:
    rng = np.random.default_rng(seed)
    ink = Image.new("L", (width, height), 0)
    k = width / 280
    top = height / 2 - 140 * k
    ImageDraw.Draw(ink).line(
        [(80 * k, top + 62 * k), (196 * k, top + 58 * k), (150 * k, top + 140 * k), (118 * k, top + 226 * k)],
        fill=255, width=round(16 * k), joint="curve",
    )  # fmt: skip
    ink = np.asarray(ink.filter(ImageFilter.GaussianBlur(1.2)), np.float32)[..., None] / 255
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = (1.0 - 0.25 * xx / width) * (1.0 - 0.3 * expit((yy - 0.8 * height) / 12))  # a shadow
    paper = np.array([242, 238, 226], np.float32) * light[..., None]
    lines = (np.mod(yy, 64) < 2)[..., None] * 0.35
    paper = paper * (1 - lines) + np.array([150, 170, 215], np.float32) * light[..., None] * lines
    img = paper * (1 - 0.9 * ink) + np.array([25, 35, 90], np.float32) * light[..., None] * 0.9 * ink
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()
