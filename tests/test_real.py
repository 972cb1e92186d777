"""digitlab.evaluation.real: held-out real handwriting (USPS, Semeion) through the app's own path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from digitlab.evaluation import real
from digitlab.preprocess import to_mnist


def test_held_out_parts_share_no_writer_group(handwriting_dir):
    _, labels = real.load_part("semeion", "heldout", handwriting_dir)
    _, fit_labels = real.load_part("semeion", "fit", handwriting_dir)
    _, cal_labels = real.load_part("semeion", "calibration", handwriting_dir)
    with np.load(handwriting_dir / "semeion.npz") as z:
        all_labels = z["labels"]
    groups = real.semeion_groups(all_labels)
    # every writer group runs through all ten digits in order, so a group is a block of whole writers
    assert len(np.unique(groups)) == 6
    for g in np.unique(groups):
        assert set(all_labels[groups == g]) == set(range(10))
        assert np.all(np.diff(all_labels[groups == g].astype(int)) >= 0)
    assert len(labels) + len(fit_labels) + len(cal_labels) == len(all_labels)
    assert set(groups[: len(fit_labels)]) == {0, 1, 2} and set(groups[-len(labels) :]) == {4, 5}
    assert 0.4 < len(labels) / len(all_labels) < 0.6
    usps_held, usps_labels = real.load_part("usps", "heldout", handwriting_dir)
    assert usps_held.shape == (2007, 16, 16) and len(usps_labels) == 2007
    fit, _ = real.load_part("usps", "fit", handwriting_dir)
    calibration, _ = real.load_part("usps", "calibration", handwriting_dir)
    assert len(fit) + len(calibration) == 7291 and len(calibration) == real.USPS_CALIBRATION


def test_a_damaged_file_is_refused(handwriting_dir, tmp_path):
    shutil.copy(handwriting_dir / "semeion.npz", tmp_path / "semeion.npz")
    with open(tmp_path / "semeion.npz", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(real.HandwritingError, match="SHA-256"):
        real.load_part("semeion", "fit", tmp_path)
    with pytest.raises(real.HandwritingError, match="DIGITLAB_HANDWRITING_DIR"):
        real.load_part("usps", "fit", tmp_path)


def test_every_view_shows_the_same_digit_to_the_models(handwriting_dir):
    """Canvas views at canvas size, in their colour schemes, preprocess to nearly the same 28x28 image."""
    images, _ = real.load_part("usps", "heldout", handwriting_dir)
    for img in images[:5]:
        rng = np.random.default_rng(0)
        seen = {}
        for view in real.VIEWS:
            shown = real.view_image(img, view, rng)
            if view == "upload":
                assert isinstance(shown, bytes) and shown[:4] == b"\x89PNG"
            elif shown is not None:
                assert shown.shape == (real.CANVAS, real.CANVAS, 4)
            if shown is not None:
                seen[view] = to_mnist(shown).ravel()
        reference = seen["black-on-white"]
        for view in ("white-on-black", "colour-on-transparent", "upload"):
            assert np.corrcoef(reference, seen[view])[0, 1] > 0.8, view


def test_canvas_ink_height_is_in_range(handwriting_dir):
    images, _ = real.load_part("semeion", "heldout", handwriting_dir)
    for seed, img in enumerate(images[:20]):
        cov = real.canvas_coverage(img, np.random.default_rng(seed))
        rows = np.nonzero(cov.max(axis=1) > 0.5)[0]
        height = (rows.max() - rows.min() + 1) / real.CANVAS
        assert 0.5 < height <= 0.9


def _constant(digit):
    def predict(X):
        out = np.zeros((len(X), 10))
        out[:, digit] = 1.0
        return out

    return predict


def test_scores_follow_the_predictions(handwriting_dir):
    """A model that always says 7: accuracy is the share of 7s, every 1 is lost to 7, nothing to 3."""
    result = real.evaluate_real({"sevens": _constant(7)}, handwriting_dir, count=40, seed=1, jobs=1)
    for entry in result["sets"].values():
        m = entry["models"]["sevens"]
        assert m["n"] == 40 * len(real.VIEWS) - entry["untraceable"]
        assert m["by_digit"].get("7", {"accuracy": 1.0})["accuracy"] == 1.0
        if "1" in m["by_digit"]:
            assert m["named_confusions"]["1->7"] == 1.0
        assert m["named_confusions"]["9->3"] == 0.0
        assert m["confusions"][0]["predicted"] == 7
        sevens = m["by_digit"].get("7", {"n": 0})["n"]
        assert m["accuracy"] == pytest.approx(sevens / m["n"], abs=1e-3)


def test_benchmark_on_a_small_slice_with_tiny_models(handwriting_dir, tiny_model_dir):
    """The CI slice: every tiny model and the bundled CNN, with the uncertain flag's rates."""
    from digitlab.detector.runtime import load_detector
    from digitlab.models import ModelRegistry

    registry = ModelRegistry(tiny_model_dir).load_all()
    fns = {name: registry.get(name).predict_proba for name in registry.ready_names()}
    assert "cnn" in fns and "svm" in fns
    result = real.evaluate_real(fns, handwriting_dir, detector=load_detector(), count=60, seed=0, jobs=2)
    for entry in result["sets"].values():
        for name, m in entry["models"].items():
            assert set(m["by_view"]) == set(real.VIEWS)
            assert 0.5 < m["accuracy"] <= 1.0, name  # far better than chance even for 2,000-image models
            u = m["uncertain"]
            assert 0.0 <= u["correct_flagged"] <= 1.0
            if m["accuracy"] == 1.0:  # (the CNN asking the SVM reads Semeion's 60 scans here without a mistake)
                assert u["wrong_flagged"] is None, name
            else:
                assert 0.0 <= u["wrong_flagged"] <= 1.0, name
            if round(m["n"] * (1 - m["accuracy"])) >= 10:  # (the CNN's 7 Semeion mistakes here: views of 2 scans)
                assert u["correct_flagged"] < u["wrong_flagged"], name
    cnn = result["sets"]["usps"]["models"]["cnn"]
    assert cnn["accuracy"] > 0.85


def test_command_prints_json(monkeypatch, capsys, handwriting_dir, tiny_model_dir):
    from digitlab.cli import main
    from digitlab.core.config import get_settings

    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("DIGITLAB_HANDWRITING_DIR", str(handwriting_dir))
    get_settings.cache_clear()
    try:
        assert main(["evaluate", "svm", "--real", "--count", "10", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert set(report["sets"]) == set(real.SETS)
        assert list(report["sets"]["usps"]["models"]) == ["svm"]
        with pytest.raises(SystemExit) as exited:  # a usage error, as argparse says it
            main(["evaluate", "svm", "--real", "--count", "0"])
        assert exited.value.code == 2
        assert "--count" in capsys.readouterr().err
        monkeypatch.setenv("DIGITLAB_HANDWRITING_DIR", str(handwriting_dir / "nowhere"))
        get_settings.cache_clear()
        assert main(["evaluate", "svm", "--real", "--count", "5"]) == 2
        assert "DIGITLAB_HANDWRITING_DIR" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
