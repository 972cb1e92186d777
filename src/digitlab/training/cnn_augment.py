"""Batch augmentation for CNN training in torch: one affine + elastic warp through `grid_sample`, and
stroke thickening/thinning through max-pooling, so it costs a few percent of an epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """Random on-the-fly distortions, applied to every training batch (never to validation/test)."""

    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.15)
    aspect: float = 0.08  # extra independent x/y scale jitter (+-), digits drawn narrow or wide
    shear: float = 0.15  # horizontal shear factor (+-), ~8.5 degrees of slant
    translate_px: float = 2.5
    elastic_p: float = 0.5  # fraction of images that also get an elastic distortion
    elastic_px: float = 1.2  # displacement std in pixels of the elastic field
    elastic_grid: int = 4  # control points per side of the (bicubically upsampled) random field
    thicken_p: float = 0.25  # fraction of images whose strokes are made thicker (grey dilation)
    thin_p: float = 0.2  # fraction made thinner (grey erosion)


def _shift_max(x):
    """3x3 grey dilation (max over the 8-neighbourhood): separable shifted maxima, ~10x faster than max_pool2d."""
    import torch
    import torch.nn.functional as F

    p = F.pad(x, (1, 1, 1, 1))
    h = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(h[..., :-2, :], h[..., 1:-1, :]), h[..., 2:, :])


def _cross_min(x):
    """Grey erosion by a plus-shaped element (gentler than 3x3: MNIST strokes are only 2-3 px wide)."""
    import torch
    import torch.nn.functional as F

    p = F.pad(x, (1, 1, 1, 1))
    c = p[..., 1:-1, 1:-1]
    out = torch.minimum(c, torch.minimum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]))
    return torch.minimum(out, torch.minimum(p[..., :-2, 1:-1], p[..., 2:, 1:-1]))


_CACHE: dict = {}


def _upsample_matrix(g: int):
    """(28, g) bicubic interpolation matrix: U @ field @ U.T upsamples a g x g field to 28 x 28."""
    import torch
    import torch.nn.functional as F

    key = ("up", g)
    if key not in _CACHE:
        eye = torch.eye(g).view(g, 1, g, 1)
        _CACHE[key] = F.interpolate(eye, size=(28, 1), mode="bicubic", align_corners=True)[
            :, 0, :, 0
        ].T.contiguous()
    return _CACHE[key]


def _base_grid():
    """(784, 3) homogeneous pixel-centre coordinates in [-1, 1] (x, y, 1), as `affine_grid` uses them."""
    import torch

    if "grid" not in _CACHE:
        c = (torch.arange(28, dtype=torch.float32) * 2 + 1) / 28 - 1
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        _CACHE["grid"] = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones(784)], 1)
    return _CACHE["grid"]


def augment_batch(x, generator, aug: Augmentation | None = None):
    """Randomly distort a batch `(b, 1, 28, 28)` float in [0, 1]; batched torch ops, no python loops.

    Stroke thickness (dilation / erosion blended with a random strength), then one resampling for
    a random affine map (rotation, scale, aspect, shear, translation) plus, on a random subset, an
    elastic displacement field (random g x g control points, bicubically upsampled).
    """
    aug = aug or Augmentation()
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def uniform(lo: float, hi: float, *shape: int):
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=generator)

    # stroke thickness
    r = torch.rand(b, generator=generator)
    strength = uniform(0.4, 1.0).view(b, 1, 1, 1)
    thick = (r < aug.thicken_p).float().view(b, 1, 1, 1) * strength
    thin = ((r >= aug.thicken_p) & (r < aug.thicken_p + aug.thin_p)).float().view(b, 1, 1, 1) * strength
    x = x + thick * (_shift_max(x) - x) + thin * (_cross_min(x) - x)
    # erosion also dims the ink: stretch those images back so their brightest pixel is 1 again
    peak = x.amax(dim=(2, 3), keepdim=True).clamp_min(0.2)
    x = torch.where(thin > 0, x / peak, x)

    # affine: output -> input sampling matrix (normalized coords, 1 px = 2/28)
    angle = uniform(-1.0, 1.0) * math.radians(aug.rotation_deg)
    scale = uniform(*aug.scale)
    sx = scale * uniform(1 - aug.aspect, 1 + aug.aspect)
    sy = scale * uniform(1 - aug.aspect, 1 + aug.aspect)
    shear = uniform(-aug.shear, aug.shear)
    tx = uniform(-1.0, 1.0) * aug.translate_px * 2 / 28
    ty = uniform(-1.0, 1.0) * aug.translate_px * 2 / 28
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map M = R @ Shear @ S; sampling needs its inverse S^-1 @ Shear^-1 @ R^-1
    a11, a12 = (cos + shear * sin) / sx, (sin - shear * cos) / sx
    a21, a22 = -sin / sy, cos / sy
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)  # (b, 2, 3)
    grid = torch.matmul(_base_grid(), theta.transpose(1, 2)).view(b, 28, 28, 2)

    # elastic: coarse random displacements, smoothly upsampled, on a random subset
    g = aug.elastic_grid
    field = torch.randn(b, 2, g, g, generator=generator) * (aug.elastic_px * 2 / 28)
    field = field * (torch.rand(b, 1, 1, 1, generator=generator) < aug.elastic_p).float()
    up = _upsample_matrix(g)
    field = up @ field @ up.T  # (b, 2, 28, 28)
    grid = grid + field.permute(0, 2, 3, 1)

    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)
