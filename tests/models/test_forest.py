"""FlatForest answers exactly like the scikit-learn forest it was flattened from."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from digitlab.models.forest import FlatForest


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.mark.parametrize("cls", [ExtraTreesClassifier, RandomForestClassifier])
@pytest.mark.parametrize("min_samples_leaf", [1, 5])
def test_same_probabilities_as_scikit_learn(digits, cls, min_samples_leaf):
    X, y = digits
    forest = cls(n_estimators=30, min_samples_leaf=min_samples_leaf, random_state=0).fit(X[:1200], y[:1200])
    flat = FlatForest.from_sklearn(forest)
    expected = forest.predict_proba(X[1200:])
    np.testing.assert_allclose(flat.predict_proba(X[1200:]), expected, atol=1e-6)
    for i in range(1200, 1240):  # the one-drawing path
        np.testing.assert_allclose(flat.predict_proba(X[i]), forest.predict_proba(X[i : i + 1]), atol=1e-6)
    assert (flat.predict(X[1200:]) == forest.predict(X[1200:])).all()


def test_thresholds_are_compared_like_scikit_learn_at_the_boundary(digits):
    """Features at a float64 threshold's float32 neighbours go where scikit-learn sends them."""
    X, y = digits
    X = (X + np.random.default_rng(0).uniform(0, 0.01, X.shape)).astype(np.float32)  # thresholds off the float32 grid
    forest = RandomForestClassifier(n_estimators=1, random_state=1).fit(X[:600], y[:600])
    tree = forest.estimators_[0].tree_
    flat = FlatForest.from_sklearn(forest)
    probes = []
    for sample in X[600:700]:
        for node in forest.estimators_[0].decision_path(sample[None]).indices[:-1]:  # the nodes it passes
            t = tree.threshold[node]
            for value in np.nextafter(np.float32(t), np.float32([-np.inf, np.inf])).tolist() + [np.float32(t)]:
                x = sample.copy()
                x[tree.feature[node]] = value
                probes.append(x)
    P = np.asarray(probes, np.float32)
    np.testing.assert_array_equal(flat.predict_proba(P), forest.predict_proba(P))


def test_classes_other_than_0_to_9(digits):
    X, y = digits
    labels = np.array([3, 7])[(y[:400] > 4).astype(int)]
    forest = ExtraTreesClassifier(n_estimators=5, random_state=0).fit(X[:400], labels)
    flat = FlatForest.from_sklearn(forest)
    assert list(flat.classes_) == [3, 7]
    assert (flat.predict(X[400:500]) == forest.predict(X[400:500])).all()
