"""Style coverage for training (training.coverage, synth.real_glyphs) and the real-handwriting thresholds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from digitlab.synth.glyphs import RARE_STYLES, STYLES
from digitlab.synth.real_glyphs import REAL_STYLES, any_style_digit
from digitlab.training import coverage
from digitlab.training.real_calibration import (
    BAR,
    LEVEL,
    REAL_BUDGET,
    _largest_threshold,
    _within_bar,
    real_thresholds,
)


def test_every_digit_mixes_ordinary_rare_and_real_styles():
    table = coverage.style_table()
    assert set(table) == set(range(10))
    for digit, (names, p) in table.items():
        assert p.sum() == pytest.approx(1.0)
        assert set(names) == {n for n, (d, _, _) in {**STYLES, **REAL_STYLES}.items() if d == digit}
        weights = dict(zip(names, p))
        ordinary = [weights[n] for n in names if n in STYLES and n not in RARE_STYLES]
        special = [weights[n] for n in names if n in RARE_STYLES or n in REAL_STYLES]
        if ordinary and special:
            assert min(special) > max(ordinary)
    for name in ("4-one-stroke", "4-bolt", "7-low-crossbar", "7-hook", "9-open-loop", "9-hooked-tail"):
        assert name in REAL_STYLES


def test_real_styles_draw_their_digit_in_a_unit_box():
    for name, (digit, n_strokes, _) in REAL_STYLES.items():
        strokes = any_style_digit(digit, np.random.default_rng(3), name)
        assert len(strokes) == n_strokes
        pts = np.vstack(strokes)
        assert pts.shape[1] == 2 and np.isfinite(pts).all()
        assert -0.6 < pts.min() and pts.max() < 1.6
        assert np.ptp(pts[:, 1]) > 0.7, name  # a whole digit high
    with pytest.raises(ValueError, match="draws a 4"):
        any_style_digit(7, np.random.default_rng(0), "4-bolt")


def test_style_training_set_is_reproducible_and_preprocessed(tmp_path):
    X, y = coverage.style_training_set(40, seed=5, jobs=1, cache_dir=tmp_path)
    assert X.dtype == np.uint8 and X.shape[1:] == (28, 28) and 35 <= len(y) <= 40
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) >= 6
    # like preprocess.to_mnist: ink centred, longer side about 20 px
    rows = np.nonzero(X[0].max(axis=1))[0]
    assert 3 <= rows.min() and rows.max() <= 25
    X2, y2 = coverage.style_training_set(40, seed=5, jobs=2)  # no cache, other process layout
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert (tmp_path / "style_train_40_5.npz").exists()


def test_coverage_set_for_quick_runs_leaves_out_real_handwriting(tmp_path):
    settings = SimpleNamespace(data_dir=tmp_path, handwriting_path=tmp_path / "nowhere")
    images, y, summary = coverage.coverage_set(settings, limit=300, jobs=1)
    assert images.shape == (len(y), 28, 28)
    assert summary["style_drawings"] == len(y) <= 100 and summary["real_handwriting"] == 0
    assert coverage.real_training_set(tmp_path / "nowhere", jobs=1) is None


def test_largest_threshold_keeps_the_budget():
    rng = np.random.default_rng(0)
    conf = rng.random(1000)
    correct = rng.random(1000) < 0.9
    already = rng.random(1000) < 0.005
    t = _largest_threshold(conf, already, correct, 0.03)
    flagged = (already | (conf < t)) & correct
    assert flagged.sum() <= 0.03 * correct.sum()
    # one step further would break it
    nxt = np.sort(conf[correct & ~already & (conf >= t)])[1]
    assert ((already | (conf < nxt)) & correct).sum() > 0.03 * correct.sum()


def _upper_bound(threshold, conf, correct, scans):
    """LEVEL quantile of the correct answers' flagged share over the scans' resamples (`_within_bar`'s own)."""
    _, scan = np.unique(scans, return_inverse=True)
    n = scan.max() + 1
    w = np.random.default_rng(0).multinomial(n, np.full(n, 1 / n), size=2000)
    flagged = np.bincount(scan, (conf < threshold) & correct, n)
    return np.quantile(w @ flagged / (w @ np.bincount(scan, correct, n)), LEVEL)


def test_the_bar_holds_with_a_margin_where_few_scans_carry_the_budget():
    """2 % of the correct answers on 200 scans in 5 views: spread over 20 scans the point budget stands; carried
    by 4 scans (all their views) a resample of the scans often flags over 3 %, so the threshold comes down."""
    rng = np.random.default_rng(6)
    scans = np.repeat(np.arange(200), 5)
    correct, already = np.ones(1000, bool), np.zeros(1000, bool)
    spread = rng.random(1000)
    clustered = np.repeat(rng.random(200), 5) + rng.random(1000) * 1e-6  # a scan's views agree
    for conf, moved in ((spread, False), (clustered, True)):
        point = _largest_threshold(conf, already, correct, 0.02)
        t = _within_bar(conf, already, correct, scans, point)
        assert (t < point) == moved and _upper_bound(t, conf, correct, scans) <= BAR
        if moved:  # the largest such threshold: the next candidate up breaks the bar
            nxt = np.sort(conf[conf >= t])[1]
            assert _upper_bound(nxt, conf, correct, scans) > BAR
    # without scans each row is its own: real_thresholds takes (X, labels) too (the tests below)


class _Det:
    def __init__(self, p):
        self.p = p

    def not_digit_probabilities(self, X):
        return self.p[: len(X)]


class _Model:
    """A model sure of its right answers and unsure of its wrong ones (a third of them sure)."""

    def __init__(self, labels, wrong):
        self.labels, self.wrong = labels, wrong

    def predict_proba(self, X):
        idx = X[:, 0].astype(int)
        out = np.full((len(X), 10), 0.02)
        pred = np.where(self.wrong[idx], (self.labels[idx] + 1) % 10, self.labels[idx])
        conf = np.where(self.wrong[idx] & (idx % 3 != 0), 0.4, 0.95) - (idx % 7) * 0.01
        out[np.arange(len(X)), pred] = conf
        return out


def _real_set(seed: int, n: int = 3000):
    """n "real" images (row i is all i: the fakes look up their answers by it), labels, 5 % model mistakes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    wrong = rng.random(n) < 0.05
    return n, rng, labels, wrong, np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 784), np.float32)


def test_real_thresholds_flag_most_mistakes_within_the_budget():
    n, rng, labels, wrong, X = _real_set(1)
    det = _Det(rng.random(n) * 0.5)
    model = _Model(labels, wrong)
    real = {"a": (X, labels)}
    drawn = (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32))
    chosen = real_thresholds(det, {"m": model}, real, drawn, t_detector=0.9, p_negatives=np.full(100, 0.99))
    rates = chosen["real"]["m"]["a"]
    assert rates["correct_flagged"] <= REAL_BUDGET
    assert rates["wrong_flagged"] > 0.5
    assert chosen["t_detector"] >= 0.9 and 0.4 < chosen["t_model"]["m"] <= 0.95


def test_detector_threshold_never_gives_up_the_non_digits():
    """Real digits the detector calls non-digits raise t_detector only while 85 % of non-digits stay flagged."""
    n = 2000
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, n)
    X = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 784), np.float32)
    p_digits = np.where(rng.random(n) < 0.05, 0.9999, 0.01)  # 5 % of real digits look like non-digits
    p_negatives = np.linspace(0.5, 1.0, 1000)
    chosen = real_thresholds(
        _Det(p_digits), {"m": _Model(labels, np.zeros(n, bool))}, {"a": (X, labels)},
        (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32)), t_detector=0.3, p_negatives=p_negatives,
    )
    assert chosen["t_detector"] == pytest.approx(np.quantile(p_negatives, 0.15))
    assert (p_negatives > chosen["t_detector"]).mean() >= 0.85 - 1e-3
    # the detector alone spends more than the budget on this set: reported, not obeyed
    assert chosen["real"]["m"]["a"]["correct_flagged"] > REAL_BUDGET


class _DetWithDigits(_Det):
    """A detector whose own digit outputs favour the true digit: it disagrees with wrong answers."""

    def __init__(self, p, labels):
        super().__init__(p)
        self.labels = labels

    def detector_outputs(self, X):
        idx = X[:, 0].astype(int)
        digits = np.full((len(X), 10), 0.02)
        digits[np.arange(len(X)), self.labels[idx]] = 0.82
        return self.p[idx], digits


def test_second_opinion_is_chosen_when_it_catches_more_within_the_budget():
    n, rng, labels, wrong, X = _real_set(3)
    det = _DetWithDigits(rng.random(n) * 0.5, labels)
    drawn = (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32))
    chosen = real_thresholds(
        det, {"m": _Model(labels, wrong)}, {"a": (X, labels)}, drawn, t_detector=0.9,
        p_negatives=np.full(100, 0.99), drawn_digits=np.full((10, 10), 0.1),
    )
    rates = chosen["real"]["m"]["a"]
    assert chosen["t_joint"]["m"] > 0 and chosen["t_model"]["m"] == 0.0
    assert rates["correct_flagged"] <= REAL_BUDGET
    assert rates["wrong_flagged"] > 0.95  # the sure mistakes too, which the top probability misses
    # without the detector's digit outputs there is no second opinion
    plain = real_thresholds(
        _Det(det.p), {"m": _Model(labels, wrong)}, {"a": (X, labels)}, drawn, t_detector=0.9,
        p_negatives=np.full(100, 0.99),
    )
    assert plain["t_joint"] == {} and plain["real"]["m"]["a"]["wrong_flagged"] < 0.8


class _Networks(_Model):
    """A model of several networks (like the CNN): its own opinion (the networks' smallest probability per
    digit) is low for the answer on its mistakes, where the detector's digit outputs cannot tell."""

    def predict_with_opinion(self, X):
        proba = self.predict_proba(X)
        idx = X[:, 0].astype(int)
        own = proba.copy()
        own[self.wrong[idx]] *= 0.3  # one network disagrees with the sure mistakes
        return proba, own


def test_a_model_of_several_networks_takes_their_own_opinion_with_the_detectors():
    n, rng, labels, wrong, X = _real_set(4)
    det = _Det(rng.random(n) * 0.5)
    answers = np.where(wrong, (labels + 1) % 10, labels)  # digit outputs that agree with every answer
    digits = 0.2 * rng.dirichlet(np.ones(10), n) + 0.8 * np.eye(10)[answers]
    det.detector_outputs = lambda X: (det.p[X[:, 0].astype(int)], digits[X[:, 0].astype(int)])
    drawn = (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32))
    kwargs = {"t_detector": 0.9, "p_negatives": np.full(100, 0.99), "drawn_digits": np.full((10, 10), 0.1)}
    networks = real_thresholds(det, {"m": _Networks(labels, wrong)}, {"a": (X, labels)}, drawn, **kwargs)
    alone = real_thresholds(det, {"m": _Model(labels, wrong)}, {"a": (X, labels)}, drawn, **kwargs)
    assert networks["opinion"] == {"m": "members"} and alone["opinion"] == {}
    caught, plain = networks["real"]["m"]["a"], alone["real"]["m"]["a"]
    assert caught["correct_flagged"] <= REAL_BUDGET
    assert caught["wrong_flagged"] > plain["wrong_flagged"] + 0.2


def test_svm_takes_the_cnns_most_doubtful_network(monkeypatch):
    """svm's opinion is "cnn_networks": a CNN that shares the svm's sure mistakes but one of whose networks
    doubts them catches them; with the CNN's probability ("cnn") they stay unflagged."""
    from digitlab.training import real_calibration

    n, rng, labels, wrong, X = _real_set(5)
    det = _Det(rng.random(n) * 0.5)
    det.detector_outputs = lambda X: (det.p[X[:, 0].astype(int)], np.full((len(X), 10), 0.1))
    drawn = (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32))
    kwargs = {"t_detector": 0.9, "p_negatives": np.full(100, 0.99), "drawn_digits": np.full((10, 10), 0.1)}

    class Sure(_Model):  # sure of every answer, the mistakes too
        def predict_proba(self, X):
            out = super().predict_proba(X)
            return np.where(out > 0.3, 0.95, out)

    class Cnn(_Networks, Sure):  # it makes the svm's mistakes, as sure, but one network doubts them
        pass

    models = {"svm": Sure(labels, wrong), "cnn": Cnn(labels, wrong)}
    chosen = real_thresholds(det, models, {"a": (X, labels)}, drawn, **kwargs)
    assert chosen["opinion"] == {"svm": "cnn_networks", "cnn": "members"}
    rates = chosen["real"]["svm"]["a"]
    assert rates["correct_flagged"] <= REAL_BUDGET and rates["wrong_flagged"] > 0.95
    monkeypatch.setattr(real_calibration, "CNN_OPINION", {"svm": "cnn"})
    plain = real_thresholds(det, models, {"a": (X, labels)}, drawn, **kwargs)
    assert plain["opinion"]["svm"] == "cnn" and plain["real"]["svm"]["a"]["wrong_flagged"] < 0.1


def test_the_trees_take_the_detector_and_the_cnns_most_doubtful_network():
    """The trees' opinion: the mean of the detector's reading and the CNN's most doubtful network (when the CNN
    is among the models calibrated); a tree sure of a mistake both doubt is caught within the budget."""
    n, rng, labels, wrong, X = _real_set(7)
    det = _Det(rng.random(n) * 0.5)
    truth = np.eye(10)[labels] * 0.8 + 0.02
    det.detector_outputs = lambda X: (det.p[X[:, 0].astype(int)], truth[X[:, 0].astype(int)])
    drawn = (np.zeros(10), np.zeros(10, int), {}, np.zeros((10, 784), np.float32))
    kwargs = {"t_detector": 0.9, "p_negatives": np.full(100, 0.99), "drawn_digits": np.full((10, 10), 0.1)}

    class Sure(_Model):
        def predict_proba(self, X):
            out = super().predict_proba(X)
            return np.where(out > 0.3, 0.95, out)

    class Cnn(_Networks, Sure):
        pass

    models = {"extra_trees": Sure(labels, wrong), "cnn": Cnn(labels, wrong)}
    chosen = real_thresholds(det, models, {"a": (X, labels, np.arange(n))}, drawn, **kwargs)
    assert chosen["opinion"]["extra_trees"] == "detector_and_cnn_networks"
    rates = chosen["real"]["extra_trees"]["a"]
    assert rates["correct_flagged"] <= REAL_BUDGET and rates["wrong_flagged"] > 0.95
    alone = real_thresholds(det, {"extra_trees": Sure(labels, wrong)}, {"a": (X, labels)}, drawn, **kwargs)
    assert alone["opinion"] == {}  # no CNN calibrated: the detector's opinion


# --- distorted copies of the real handwriting (synth.distort, coverage.variants_of) -------------------


def _scan_of_a_seven() -> np.ndarray:
    scan = np.zeros((16, 16), np.uint8)
    scan[2:4, 3:13] = 255  # the bar
    for row in range(4, 15):  # the stem, leaning left as it goes down
        col = 12 - (row - 4) * 6 // 10
        scan[row, col - 1 : col + 1] = 255
    return scan


def test_a_distorted_scan_keeps_its_ink_and_differs_per_seed():
    from digitlab.synth.distort import MARGIN, UPSCALE, distort_scan

    scan = _scan_of_a_seven()
    a = distort_scan(scan, np.random.default_rng(1))
    b = distort_scan(scan, np.random.default_rng(1))
    c = distort_scan(scan, np.random.default_rng(2))
    assert a.dtype == np.uint8 and a.shape == (16 * UPSCALE + 2 * MARGIN,) * 2
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[:MARGIN].max() == 0 and a[:, -MARGIN:].max() == 0  # nothing reaches the border
    ink = (scan > 127).sum() * UPSCALE**2
    for out in (a, c):  # the same stroke, bent: about as much ink, not a blot and not a trace
        assert 0.4 * ink < (out > 127).sum() < 2.0 * ink


def test_distorted_copies_are_reproducible_and_preprocessed():
    scans = np.stack([_scan_of_a_seven(), _scan_of_a_seven()[:, ::-1]])
    labels = np.array([7, 7], np.uint8)
    X, y = coverage.variants_of(scans, labels, 3, seed=4, jobs=1)
    assert X.dtype == np.uint8 and X.shape[1:] == (28, 28) and len(X) == len(y) == 6
    assert (y == 7).all() and len({x.tobytes() for x in X}) == 6
    for x in X:  # like preprocess.to_mnist: the longer side of the ink about 20 px
        rows, cols = np.nonzero(x.max(axis=1) > 127)[0], np.nonzero(x.max(axis=0) > 127)[0]
        assert 17 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 21
    X2, y2 = coverage.variants_of(scans, labels, 3, seed=4, jobs=2)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert len(coverage.variants_of(scans, labels, 0)[1]) == 0


def test_real_variant_set_caches_and_says_when_the_files_are_missing(tmp_path, handwriting_dir):
    assert coverage.real_variant_set(tmp_path / "nowhere", {"semeion": 1}, jobs=1) is None
    directory = handwriting_dir
    X, y = coverage.real_variant_set(directory, {"semeion": 1}, jobs=1, cache_dir=tmp_path)
    assert 580 <= len(y) <= 597 and X.shape == (len(y), 28, 28)  # one copy of each of the 597 "fit" scans
    assert (tmp_path / f"real_variants_semeion_fit_1_{coverage.VARIANT_SEED}.npz").exists()
    X2, y2 = coverage.real_variant_set(directory, {"semeion": 1}, jobs=1, cache_dir=tmp_path)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)


def test_the_models_show_as_training_while_their_drawings_are_made(tmp_path, monkeypatch):
    """`digitlab train` makes minutes of style drawings and real handwriting before its fits; the models showed as
    missing meanwhile ("Not trained: ... digitlab train") while `digitlab run` said they were training (a
    newcomer's tour, session 32). The markers are there from the start, and go if that step fails."""
    from digitlab.cli import train as train_cli

    seen = []

    def coverage_set(settings, **_):
        seen.append(sorted(p.name for p in tmp_path.glob("*.training")))
        raise KeyboardInterrupt

    monkeypatch.setattr(coverage, "coverage_set", coverage_set)
    settings = SimpleNamespace(model_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_cli._train(settings, ["svm", "extra_trees"], limit=300, jobs=1, calibrate_only=False, out_dir=None)
    assert seen == [["extra_trees.training", "svm.training"]]
    assert not list(tmp_path.glob("*.training"))
