import numpy as np
from scipy import ndimage

from digitlab.features import DigitFeatures, deskew, gradient_histograms


def _bar(slant: float) -> np.ndarray:
    """A vertical stroke sheared by `slant` pixels per row, as a (1, 784) MNIST-like image."""
    img = np.zeros((28, 28), np.float32)
    for r in range(4, 24):
        c = round(14 + slant * (r - 14))
        img[r, c - 1 : c + 2] = 1.0
    return img.reshape(1, 784)


def _column_spread(image: np.ndarray) -> float:
    cols = np.nonzero(image.reshape(28, 28).sum(axis=0) > 0.2)[0]
    return float(cols.max() - cols.min())


def test_deskew_straightens_a_slanted_stroke():
    slanted = _bar(0.5)
    assert _column_spread(slanted) >= 9
    assert _column_spread(deskew(slanted)) <= 4


def test_deskew_centres_the_mass_and_keeps_blank_images_blank():
    img = np.zeros((28, 28), np.float32)
    img[2:8, 2:8] = 1.0
    out = deskew(img.reshape(1, 784)).reshape(28, 28)
    cy, cx = ndimage.center_of_mass(out)
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1
    assert deskew(np.zeros((2, 784), np.float32)).max() == 0.0


def test_batch_equals_one_by_one():
    """One image takes its own (affine) path; it must agree with the batch path to float32 rounding."""
    rng = np.random.default_rng(0)
    batch = np.vstack([(rng.random((5, 784)) > 0.8).astype(np.float32), _bar(0.5), _bar(-0.3), np.zeros((1, 784))])
    one_by_one = np.vstack([deskew(row[None]) for row in batch])
    np.testing.assert_allclose(deskew(batch), one_by_one, atol=1e-5)
    assert deskew(np.zeros((1, 784), np.float32)).max() == 0.0


def test_gradient_histograms_see_orientation():
    vertical, horizontal = _bar(0.0), _bar(0.0).reshape(28, 28).T.reshape(1, 784)
    hv, hh = gradient_histograms(vertical), gradient_histograms(horizontal)
    assert hv.shape == (1, 7 * 7 * 8)
    per_bin_v = hv.reshape(49, 8).sum(axis=0)
    per_bin_h = hh.reshape(49, 8).sum(axis=0)
    # a vertical stroke has horizontal gradients (bins 0 and 4), a horizontal one vertical (2 and 6)
    assert per_bin_v[[0, 4]].sum() > 3 * per_bin_v[[2, 6]].sum()
    assert per_bin_h[[2, 6]].sum() > 3 * per_bin_h[[0, 4]].sum()


def test_gradient_histograms_split_each_gradient_between_its_two_nearest_bins():
    """The scatter-add implementation against the definition: per cell and bin, the sum of the
    gradient magnitudes weighted by max(0, 1 - circular distance to the bin), square-rooted."""
    x = np.random.default_rng(3).random((3, 28, 28)).astype(np.float32) ** 4
    gy, gx = np.zeros_like(x), np.zeros_like(x)
    gy[:, 1:-1] = x[:, 2:] - x[:, :-2]
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    mag = np.hypot(gx, gy)
    pos = np.mod(np.arctan2(gy, gx), 2 * np.pi) * (8 / (2 * np.pi))
    for cell in (4, 7):
        n = 28 // cell
        expected = np.zeros((3, n, n, 8))
        for k in range(8):
            d = np.abs(pos - k)
            w = mag * np.clip(1 - np.minimum(d, 8 - d), 0, None)
            expected[..., k] = w.reshape(3, n, cell, n, cell).sum(axis=(2, 4))
        got = gradient_histograms(x, cell=cell)
        assert got.shape == (3, n * n * 8)
        np.testing.assert_allclose(got, np.sqrt(expected.reshape(3, -1)), atol=1e-5)


def test_digit_features_blocks_and_weights():
    x = _bar(0.2)
    both = DigitFeatures(pixels=True, hog=True, hog_weight=0.5).transform(x)
    assert both.shape == (1, 784 + 392)
    np.testing.assert_allclose(both[:, 784:], 0.5 * gradient_histograms(deskew(x)), rtol=1e-5)
    assert DigitFeatures(pixels=False).transform(x).shape == (1, 392)
