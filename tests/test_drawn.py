"""digitlab.synth and evaluation.drawn: canvas-like renderer, MNIST tracing, style templates, scribbles, the evaluation."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digitlab.evaluation.drawn import evaluate_drawn, evaluate_drawn_command
from digitlab.synth import datasets
from digitlab.synth.datasets import SCRIBBLE_KINDS, drawn_dataset, save_contact_sheet, scribbles
from digitlab.synth.glyphs import STYLES, style_digit
from digitlab.synth.render import HEIGHT_RANGE, SCHEMES, WIDTH_RANGE, ink_bbox, render, render_with_meta
from digitlab.synth.trace import _adjacency, skeletonize, stroke_fidelity, strokes_from_mnist


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    """The first 300 official MNIST test digits (uint8) and labels."""
    from digitlab.data import load_mnist

    images, labels = load_mnist("test", directory=mnist_dir, download=False, limit=300)
    return np.array(images), np.array(labels)


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


# --- renderer ------------------------------------------------------------------------------------


def test_render_shape_dtype_and_size():
    rng = np.random.default_rng(0)
    img = render(style_digit(7, rng), rng)
    assert img.shape == (280, 280, 4) and img.dtype == np.uint8 and img.flags.writeable
    small = render(style_digit(7, rng), rng, size=112)
    assert small.shape == (112, 112, 4) and small.dtype == np.uint8


def test_pen_width_is_respected_and_caps_are_round():
    """A vertical line drawn with width w is w px wide and w/2 longer at each end (round caps)."""
    rng = np.random.default_rng(1)
    line = [np.array([[0.5, 0.0], [0.5, 1.0]])]
    for _ in range(12):
        img, meta = render_with_meta(line, rng, rotation=0, wobble=0, scheme="black-on-white")
        w = meta["width"]
        assert WIDTH_RANGE[0] <= w <= WIDTH_RANGE[1] and w == int(w)
        x0, y0, x1, y1 = ink_bbox(img)
        assert abs((x1 - x0) - w) <= 1.5
        assert abs((y1 - y0) - meta["height_frac"] * 280) <= 1.5
        # round cap: the row at the very top of the ink is much narrower than the pen
        top_row = img[y0 + 1, :, 0] < 128
        assert top_row.sum() < 0.8 * w


def test_widths_and_heights_cover_the_ranges():
    rng = np.random.default_rng(2)
    widths, heights = [], []
    for i in range(60):
        img, meta = render_with_meta(style_digit(i % 10, rng), rng)
        x0, y0, x1, y1 = ink_bbox(img)
        h = (y1 - y0) / 280
        assert HEIGHT_RANGE[0] - 0.01 <= h <= HEIGHT_RANGE[1] + 0.01, meta
        assert abs(h - meta["height_frac"]) <= 0.01
        assert x0 >= 0 and y0 >= 0 and x1 <= 280 and y1 <= 280  # anywhere, but on the canvas
        widths.append(meta["width"])
        heights.append(h)
    assert min(widths) <= 11 and max(widths) >= 22
    assert min(heights) <= 0.45 and max(heights) >= 0.75


def test_positions_vary_over_the_whole_canvas():
    rng = np.random.default_rng(3)
    centres = []
    for i in range(40):
        x0, y0, x1, y1 = ink_bbox(render(style_digit(i % 10, rng), rng))
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
    c = np.array(centres)
    assert c[:, 0].min() < 110 and c[:, 0].max() > 170
    assert c[:, 1].min() < 110 and c[:, 1].max() > 170


def test_colour_schemes_are_all_present_and_right():
    rng = np.random.default_rng(4)
    seen = set()
    for i in range(48):
        img, meta = render_with_meta(style_digit(i % 10, rng), rng)
        scheme = meta["scheme"]
        seen.add(scheme)
        corner = img[0, 0]
        alpha = img[..., 3]
        if scheme == "colour-on-transparent":
            assert alpha.min() == 0 and alpha.max() == 255
            assert tuple(corner) == (0, 0, 0, 0)
            inked = img[alpha == 255][:, :3]
            assert (inked == inked[0]).all()  # one pen colour; anti-aliasing lives in alpha
        else:
            assert (alpha == 255).all()
            ink = np.abs(img[..., :3].astype(int) - corner[:3].astype(int)).max(axis=-1)
            pen = img[..., :3][ink == ink.max()][0]
            if scheme == "black-on-white":
                assert tuple(corner[:3]) == (255, 255, 255) and tuple(pen) == (0, 0, 0)
            elif scheme == "white-on-black":
                assert tuple(corner[:3]) == (0, 0, 0) and tuple(pen) == (255, 255, 255)
            else:
                assert _luma(corner) >= 200 and _luma(corner) - _luma(pen) >= 70
        # anti-aliased edges: some partial coverage
        cov = alpha if scheme == "colour-on-transparent" else np.abs(
            img[..., :3].astype(int) - corner[:3].astype(int)).max(axis=-1)
        assert ((cov > 0) & (cov < cov.max())).any()
    assert seen == set(SCHEMES)


def test_render_is_deterministic_and_rejects_nothing_to_draw():
    a = render(style_digit(3, np.random.default_rng(5)), np.random.default_rng(6))
    b = render(style_digit(3, np.random.default_rng(5)), np.random.default_rng(6))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        render([], np.random.default_rng(0))


def test_dot_and_width_jitter():
    rng = np.random.default_rng(7)
    dot = render([np.array([[0.3, 0.3]]), np.array([[0.6, 0.6]])], rng, scheme="white-on-black")
    assert ink_bbox(dot) is not None
    jittered = render(style_digit(2, rng), rng, width_jitter=0.4, scheme="black-on-white")
    assert ink_bbox(jittered) is not None


# --- skeleton and tracing ------------------------------------------------------------------------


def test_skeletonize_bar_and_ring():
    bar = np.zeros((20, 40), dtype=bool)
    bar[8:13, 5:35] = True
    sk = skeletonize(bar)
    assert sk.any() and (sk.sum(axis=0) <= 1).all() and sk.sum() >= 20
    yy, xx = np.mgrid[0:60, 0:60]
    r = np.hypot(yy - 30, xx - 30)
    ring = (r > 15) & (r < 22)
    sk = skeletonize(ring)
    adj = _adjacency(sk)
    assert all(len(nb) == 2 for nb in adj.values())  # a closed loop: no ends, no junctions
    assert np.allclose(np.hypot(*(np.argwhere(sk) - 30).T).mean(), 18.5, atol=1.5)


def _redraw28(strokes, width_px: float) -> np.ndarray:
    ss = 4
    img = Image.new("L", (28 * ss, 28 * ss), 0)
    draw = ImageDraw.Draw(img)
    for s in strokes:
        q = np.asarray(s) * 28 * ss
        draw.line(q.ravel().tolist(), fill=255, width=int(width_px * ss), joint="curve")
        r = width_px * ss / 2
        for x, y in (q[0], q[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(img.resize((28, 28), Image.BOX), dtype=np.float64) / 255


def test_strokes_from_real_mnist_digits_redraw_to_the_same_digit(test_digits):
    images, _ = test_digits
    corr = []
    for img in images[:40]:
        strokes = strokes_from_mnist(img)
        assert strokes and all(s.ndim == 2 and s.shape[1] == 2 and np.isfinite(s).all() for s in strokes)
        pts = np.vstack(strokes)
        assert pts.min() > -0.05 and pts.max() < 1.05  # unit square of the 28x28 frame
        a = ndimage.gaussian_filter(img / 255.0, 0.8)
        b = ndimage.gaussian_filter(_redraw28(strokes, 2.5), 0.8)
        corr.append(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        assert stroke_fidelity(strokes, img) > 0.6
    corr = np.array(corr)
    assert corr.min() > 0.6 and corr.mean() > 0.85, corr.round(2)


def test_strokes_are_smooth(test_digits):
    """No pixel staircases: consecutive segment directions change gradually."""
    images, _ = test_digits
    turns = []
    for img in images[:30]:
        for s in strokes_from_mnist(img):
            if len(s) < 4:
                continue
            d = np.diff(s, axis=0)
            ang = np.arctan2(d[:, 1], d[:, 0])
            turns.extend(np.abs(np.angle(np.exp(1j * np.diff(ang)))).tolist())
    assert np.median(turns) < math.radians(15)


def test_strokes_from_empty_image():
    assert strokes_from_mnist(np.zeros((28, 28), np.uint8)) == []


# --- styles --------------------------------------------------------------------------------------


def test_style_templates_have_the_declared_strokes():
    rng = np.random.default_rng(8)
    for name, (digit, n_strokes, _) in STYLES.items():
        for _ in range(3):
            strokes = style_digit(digit, rng, style=name)
            assert len(strokes) == n_strokes, name
            for s in strokes:
                assert s.ndim == 2 and s.shape[1] == 2 and len(s) >= 2 and np.isfinite(s).all()
            pts = np.vstack(strokes)
            assert np.ptp(pts[:, 1]) > 0.7  # a full-height digit in the unit box
    for rare in ("7-crossbar", "7-curved-top", "9-curled-tail", "1-long-flag", "1-long-flag-base", "4-open"):
        assert rare in STYLES
    assert {d for d, _, _ in STYLES.values()} == set(range(10))
    assert all(sum(1 for d, _, _ in STYLES.values() if d == k) >= 2 for k in range(10))
    with pytest.raises(ValueError):
        style_digit(4, rng, style="7-crossbar")


def test_style_jitter_varies_the_shape():
    rng = np.random.default_rng(9)
    a = style_digit(7, rng, style="7-crossbar")
    b = style_digit(7, rng, style="7-crossbar")
    assert not np.allclose(a[0][: len(b[0])], b[0][: len(a[0])])


# --- data sets -----------------------------------------------------------------------------------


def test_drawn_dataset_is_deterministic_and_prefix_stable(test_digits):
    imgs1, labels1, meta1 = drawn_dataset(12, seed=11, digits=test_digits)
    imgs2, labels2, meta2 = drawn_dataset(12, seed=11, digits=test_digits)
    assert all(np.array_equal(a, b) for a, b in zip(imgs1, imgs2))
    assert np.array_equal(labels1, labels2) and meta1 == meta2
    imgs3, labels3, _ = drawn_dataset(5, seed=11, digits=test_digits)
    assert all(np.array_equal(a, b) for a, b in zip(imgs3, imgs1[:5])) and np.array_equal(labels3, labels1[:5])
    imgs4, _, _ = drawn_dataset(5, seed=12, digits=test_digits)
    assert not all(np.array_equal(a, b) for a, b in zip(imgs4, imgs1[:5]))


def test_drawn_dataset_sources_labels_and_png(test_digits):
    _, labels28 = test_digits
    pngs, labels, meta = drawn_dataset(40, seed=0, source="mixed", as_png=True, digits=test_digits)
    assert len(pngs) == len(labels) == len(meta) == 40
    sources = [m["source"] for m in meta]
    assert 2 <= sources.count("styles") <= 18  # ~20 %
    for png, label, m in zip(pngs, labels, meta):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size == (280, 280)
        assert m["label"] == label
        if m["source"] == "digits":
            assert labels28[m["index"]] == label
        else:
            assert STYLES[m["style"]][0] == label
    indices = [m["index"] for m in meta if m["source"] == "digits"]
    assert len(set(indices)) == len(indices)  # no digit twice
    _, labels_s, meta_s = drawn_dataset(30, seed=0, source="styles")
    assert {m["source"] for m in meta_s} == {"styles"} and set(labels_s.tolist()) <= set(range(10))
    with pytest.raises(ValueError):
        drawn_dataset(1, source="emnist")


def test_scribbles_are_nonempty_drawings_of_every_kind():
    imgs, _ = scribbles(36, seed=5)
    assert len(imgs) == 36
    for img in imgs:
        assert img.shape == (280, 280, 4) and ink_bbox(img) is not None
    for kind in SCRIBBLE_KINDS:
        k_imgs, k_meta = scribbles(2, seed=1, kinds=[kind])
        assert [m["kind"] for m in k_meta] == [kind, kind]
        assert all(ink_bbox(i) is not None for i in k_imgs)
    again, _ = scribbles(6, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(again, imgs[:6]))


def test_contact_sheet(tmp_path):
    imgs, labels, _ = drawn_dataset(16, seed=2, source="styles")
    path = save_contact_sheet(tmp_path / "sheet.png", imgs, labels.tolist(), cols=4, cell=60)
    sheet = Image.open(path)
    assert sheet.size[0] == 4 * (60 + 4) + 4 and path.stat().st_size < 300_000
    pngs, _, _ = drawn_dataset(3, seed=2, source="styles", as_png=True)
    save_contact_sheet(tmp_path / "sheet2.png", pngs)


# --- evaluation ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knn_predict(mnist_dir):
    from sklearn.neighbors import KNeighborsClassifier

    from digitlab.data import load_mnist

    X, y = load_mnist("train", directory=mnist_dir, download=False, limit=3000)
    clf = KNeighborsClassifier(n_neighbors=5).fit(np.asarray(X, dtype=np.float32).reshape(-1, 784) / 255.0, y)
    return clf.predict_proba


def test_evaluate_drawn_runs_the_api_path(knn_predict, test_digits):
    calls = {"render": 0, "preprocess": 0}

    def progress(stage, n):
        calls[stage] += n

    def uniform(X):
        return np.full((len(X), 10), 0.1)

    result = evaluate_drawn(
        {"knn": knn_predict, "uniform": uniform}, 60, seed=1, scribble_count=12, digits=test_digits,
        progress=progress,
    )
    assert calls == {"render": 72, "preprocess": 72}
    json.dumps(result)  # JSON-ready
    knn = result["models"]["knn"]
    assert knn["n"] == 60 and 0.6 <= knn["accuracy"] <= 1.0
    assert sum(g["n"] for g in knn["by_scheme"].values()) == 60
    assert set(knn["by_scheme"]) <= set(SCHEMES)
    assert sum(g["n"] for g in knn["by_source"].values()) == 60
    assert sum(g["n"] for g in knn["by_width"].values()) == 60
    assert set(knn["by_width"]) <= {"8-12 px", "13-18 px", "19-25 px"}
    assert set(knn["by_style"]) <= set(STYLES)
    conf = result["models"]["uniform"]["confidence"]
    assert conf["digits_below"]["0.5"] == 1.0 and conf["scribbles_below"]["0.5"] == 1.0


def test_evaluate_drawn_command_json(monkeypatch, capsys, test_digits):
    """The CLI path with a stand-in registry: JSON on stdout, one model per requested name."""
    import digitlab.models

    class FakeModel:
        def predict_proba(self, X):
            out = np.zeros((len(X), 10))
            out[:, 1] = 1.0
            return out

    class FakeRegistry:
        def __init__(self, model_dir):
            pass

        def load_all(self):
            return self

        def status(self):
            return {"ones": "ready", "svm": "missing"}

        def errors(self):
            return {}

        def ready_names(self):
            return ["ones"]

        def get(self, name):
            return FakeModel()

    monkeypatch.setattr(digitlab.models, "ModelRegistry", FakeRegistry)
    monkeypatch.setattr(datasets, "_mnist_test_digits", lambda directory=None: test_digits)
    assert evaluate_drawn_command([], as_json=True, count=20, seed=0) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["models"]) == ["ones"] and report["count"] == 20
    from digitlab.errors import DigitlabError

    with pytest.raises(DigitlabError, match="digitlab train svm"):
        evaluate_drawn_command(["svm"], as_json=True, count=5, seed=0)
    with pytest.raises(DigitlabError, match="unknown model"):
        evaluate_drawn_command(["nope"], as_json=True, count=5, seed=0)
    assert evaluate_drawn_command(["ones"], as_json=False, count=8, seed=0) == 0
    assert "Drawn-digit accuracy" in capsys.readouterr().out
