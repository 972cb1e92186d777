"""The segment verifier (`digitlab.segment_verifier`): trained on composed real handwriting, it tells
whole digits from fragments and merged neighbours; its artefact is checked before it is used."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from digitlab.evaluation.numbers import number_samples
from digitlab.models.artifacts import ArtifactError
from digitlab.models.registry import BUNDLED_DIR
from digitlab.segment_verifier import N_FEATURES, VERIFIER_NAME, SegmentVerifier, load_segment_verifier
from digitlab.training.segment_verifier import candidate_rows, fit_verifier


@pytest.fixture(scope="module")
def other_numbers(handwriting_dir):
    """Candidates of composed numbers the tiny verifier below does not train on (another seed)."""
    samples = number_samples(30, seed=77, directory=handwriting_dir, part="fit", owners=True)
    rows = [candidate_rows(s.image, s.owner) for s in samples]
    digits = sum(len(s.text) for s in samples)
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]), digits


def test_candidates_are_labelled_by_the_ink_they_hold(other_numbers):
    X, whole, digits = other_numbers
    assert X.shape == (len(whole), N_FEATURES)
    assert 0.05 < whole.mean() < 0.5  # whole digits and many more fragments and merges
    # every digit has a whole candidate or a few (near-equal crops: 2.6-3.1 per digit over seeds 77-79, 3.06 at
    # 77 since photos' faint strokes are brought to full strength), never dozens
    assert digits <= whole.sum() < 4 * digits


def test_a_tiny_verifier_tells_whole_digits_from_the_rest(other_numbers, handwriting_dir):
    verifier, summary = fit_verifier(120, seed=5, directory=handwriting_dir, progress=False)
    X, whole, _ = other_numbers
    scores = verifier.log_whole(X)
    assert np.all(np.isfinite(scores)) and np.all(scores <= 0)
    assert roc_auc_score(whole, scores) > 0.85, summary
    assert summary["candidates"] > 1000 and 0 < summary["whole_share"] < 1


def test_bundled_verifier_round_trips_and_separates(other_numbers):
    verifier = load_segment_verifier(None)
    X, whole, _ = other_numbers
    again = SegmentVerifier.from_bytes(verifier.to_bytes())
    np.testing.assert_allclose(again.log_whole(X), verifier.log_whole(X), rtol=1e-6, atol=1e-6)
    assert roc_auc_score(whole, verifier.log_whole(X)) > 0.9


def test_a_changed_verifier_file_is_refused(tmp_path):
    for suffix in ("json", "npz"):
        shutil.copy(BUNDLED_DIR / f"{VERIFIER_NAME}.{suffix}", tmp_path)
    path = tmp_path / f"{VERIFIER_NAME}.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_segment_verifier(tmp_path)


def test_a_verifier_for_other_features_is_refused():
    rng = np.random.default_rng(0)
    wrong = SegmentVerifier(np.zeros(5, np.float32), np.ones(5, np.float32), rng.normal(size=(5, 4)).astype(np.float32),
                            np.zeros(4, np.float32), np.ones((4, 1), np.float32), 0.0)
    with pytest.raises(ArtifactError, match="other features"):
        SegmentVerifier.from_bytes(wrong.to_bytes())
    with pytest.raises(ArtifactError, match="not a segment verifier"):
        SegmentVerifier.from_bytes(b"not an npz")
