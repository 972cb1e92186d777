"""A model's accuracy on held-out real handwriting, measured when it is built and kept in its manifest (the Models
page shows it beside MNIST test's): the figure is the served model's own, the refused drawings count as wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from digitlab.evaluation.heldout import (
    METRIC,
    HeldOut,
    heldout_metrics,
    load_heldout,
    measure_saved,
    set_metric,
)
from digitlab.models.artifacts import read_verified
from digitlab.models.registry import BUNDLED_DIR, load_model


def test_refused_drawings_count_as_wrong_and_each_set_has_its_figure():
    labels = np.array([3, 3, 7, 1, 1])
    proba = np.eye(10)[[3, 5, 7, 1, 1]]  # one wrong answer; the last "right" one was refused by the preprocessing
    data = HeldOut(np.zeros((5, 784), np.float32), labels, np.array(["usps"] * 3 + ["semeion"] * 2),
                   np.array([False, False, False, False, True]))  # fmt: skip
    assert heldout_metrics(proba, data) == {METRIC: 0.6, set_metric("usps"): round(2 / 3, 5), set_metric("semeion"): 0.5}


@pytest.fixture(scope="module")
def heldout(handwriting_dir, tmp_path_factory) -> HeldOut:
    return load_heldout(handwriting_dir, tmp_path_factory.mktemp("cache"), count=30)


def test_the_held_out_drawings_are_both_sets_in_every_view(heldout):
    assert set(heldout.sets) == {"usps", "semeion"}
    assert len(heldout.labels) > 0.9 * 2 * 30 * 5  # 30 scans a set, five views each (a few untraceable)
    assert heldout.X.dtype == np.float32 and 0 <= heldout.X.min() and heldout.X.max() <= 1


def test_a_classical_model_carries_its_own_accuracy_on_held_out_real_handwriting(heldout, mnist_dir, tmp_path):
    """Measured on the features computed beside MNIST test's in training: the figure equals what the saved
    pipeline (the one the API serves) scores on the same drawings."""
    from digitlab.training.classical import train_models

    [manifest] = train_models(["svm_pca"], tmp_path, limit=1200, jobs=1, mnist_dir=mnist_dir, real_test=heldout)
    served = load_model("svm_pca", tmp_path)
    assert manifest["metrics"] == served.manifest["metrics"]
    assert manifest["metrics"][METRIC] == heldout_metrics(served.predict_proba(heldout.X), heldout)[METRIC]
    assert 0.5 < manifest["metrics"][METRIC] < 1.0 and set_metric("semeion") in manifest["metrics"]


def test_a_saved_model_is_measured_without_touching_its_artefact(handwriting_dir, tmp_path):
    for suffix in (".json", ".onnx"):
        shutil.copy(BUNDLED_DIR / f"cnn{suffix}", tmp_path / f"cnn{suffix}")
    before = (tmp_path / "cnn.onnx").read_bytes()
    manifest = measure_saved(tmp_path, "cnn", handwriting_dir, tmp_path / "cache", count=20)
    stored, payload = read_verified(tmp_path, "cnn")  # the SHA-256 still matches
    assert payload == before and stored == manifest
    assert 0.8 < stored["metrics"][METRIC] <= 1.0
    assert stored["metrics"]["mnist_test_accuracy"] == load_model("cnn", BUNDLED_DIR).metrics["mnist_test_accuracy"]


def test_without_the_sets_nothing_is_measured_and_the_manifest_is_left_alone(tmp_path):
    for suffix in (".json", ".onnx"):
        shutil.copy(BUNDLED_DIR / f"cnn{suffix}", tmp_path / f"cnn{suffix}")
    before = (tmp_path / "cnn.json").read_bytes()
    assert load_heldout(tmp_path / "nowhere") is None
    assert measure_saved(tmp_path, "cnn", tmp_path / "nowhere") == json.loads(before)
    assert (tmp_path / "cnn.json").read_bytes() == before
