"""A real scan bent into another plausible writing of the same digit: rotation, slant, width, an elastic
warp and a stroke weight, all random.

The non-held-out real handwriting (`evaluation.real`, part "fit") has few scans of the styles MNIST lacks
(597 Semeion digits, 59 of them 9s, many with a curled tail); distorted copies give the classical models,
which have no on-the-fly augmentation of their own, more than one look at each (Simard et al., 2003).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates

UPSCALE = 4  #: the scan is warped at 4x its size, so the warp does not alias
ROTATION_DEG = 12.0  #: +- rotation
SHEAR = 0.3  #: +- horizontal shear (slant)
WIDTH_LOG = 0.25  #: +- log of the horizontal scale (narrow or wide writing)
HEIGHT_LOG = 0.1  #: +- log of the vertical scale
ELASTIC_PX = 2.5  #: largest elastic displacement, in scan pixels (uniform 0..this)
ELASTIC_SIGMA = 2.0  #: smoothness of the elastic field, in scan pixels
LEVEL = (0.3, 0.6)  #: the warped scan is cut at this level (uniform): thinner or thicker strokes
MARGIN = 8  #: background added around the result (upscaled pixels), so no ink touches the border


def distort_scan(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 scan (h, w), ink bright on black -> uint8 (4h + 16, 4w + 16), ink bright on black, warped."""
    a = np.asarray(img, np.float32) / 255.0
    h, w = a.shape
    big = np.asarray(Image.fromarray(a, "F").resize((w * UPSCALE, h * UPSCALE), Image.BICUBIC))
    rows, cols = big.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2.0, (cols - 1) / 2.0
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    shear = rng.uniform(-SHEAR, SHEAR)
    sx, sy = np.exp(rng.uniform(-WIDTH_LOG, WIDTH_LOG)), np.exp(rng.uniform(-HEIGHT_LOG, HEIGHT_LOG))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])  # (x, y) -> (x, y)
    inverse = np.linalg.inv(forward)  # each output pixel samples the source where it came from
    x, y = xx - cx, yy - cy
    src_x = inverse[0, 0] * x + inverse[0, 1] * y + cx
    src_y = inverse[1, 0] * x + inverse[1, 1] * y + cy
    reach = rng.uniform(0.0, ELASTIC_PX) * UPSCALE
    src_x += _field(rng, big.shape, reach)
    src_y += _field(rng, big.shape, reach)
    warped = map_coordinates(big, [src_y, src_x], order=1, mode="constant")
    level = rng.uniform(*LEVEL)
    ink = np.clip((warped - level) * 4.0 + 0.5, 0.0, 1.0)
    return np.rint(np.pad(ink, MARGIN) * 255.0).astype(np.uint8)


def _field(rng: np.random.Generator, shape: tuple[int, int], reach: float) -> np.ndarray:
    """A smooth random displacement field whose largest value is `reach` pixels."""
    field = gaussian_filter(rng.uniform(-1.0, 1.0, shape), ELASTIC_SIGMA * UPSCALE)
    peak = float(np.abs(field).max())
    return field * (reach / peak) if peak > 0 else field
