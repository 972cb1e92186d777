"""Shape features of a preprocessed 28x28 image for the not-a-digit detector (numpy/scipy only)."""

from __future__ import annotations

import numpy as np

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
