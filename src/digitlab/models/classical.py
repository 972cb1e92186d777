"""The four classical models of the original app, as small scikit-learn pipelines.

Each pipeline is `DigitFeatures` (stateless: deskew, gradient histograms) followed by a fitted
estimator. Training computes the features once and fits only the last step (see `training/classical.py`).
"""

from __future__ import annotations

from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import SVC

from digitlab.features import DigitFeatures

# Feature recipe per model. Distance-based models get balanced blocks; trees take them raw.
FEATURES = {
    "svm": {"pixels": False, "hog": True},
    "svm_pca": {"pixels": True, "hog": True, "pixel_weight": 1.0, "hog_weight": 0.7},
    "extra_trees": {"pixels": True, "hog": True},
    "random_forest": {"pixels": True, "hog": True},
}


def head(name: str, *, seed: int = 0, n_jobs: int = 1):
    """The estimator that follows the feature step (unfitted)."""
    if name == "svm":
        return SVC(C=10.0, gamma="scale", cache_size=1000, random_state=seed)
    if name == "svm_pca":
        return make_pipeline(PCA(n_components=60, random_state=seed), SVC(C=10.0, gamma="scale", cache_size=1000))
    if name == "extra_trees":
        return ExtraTreesClassifier(n_estimators=100, min_samples_leaf=1, n_jobs=n_jobs, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=1, n_jobs=n_jobs, random_state=seed)
    raise KeyError(name)


def features(name: str) -> DigitFeatures:
    return DigitFeatures(**FEATURES[name])


def build(name: str, *, seed: int = 0, n_jobs: int = 1) -> Pipeline:
    return Pipeline([("features", features(name)), ("classifier", head(name, seed=seed, n_jobs=n_jobs))])
