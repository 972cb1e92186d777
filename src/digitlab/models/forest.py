"""Tree ensembles as flat numpy arrays: every tree walked at once, one level per numpy step.

scikit-learn walks its trees one after the other in Python (~20 ms for one drawing through 100 trees);
onnxruntime is fast per drawing but needs seconds per worker to build its tree structures at start-up
(Extra Trees: 1.3 M nodes). Here the nodes of all trees are concatenated into a few arrays; one drawing
moves all 100 cursors down one level with five array operations, so start-up is one array load and a
prediction is ~0.1 ms. Answers equal scikit-learn's `predict_proba` (same comparisons, same leaf values).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: samples walked together in a batch (bounds the (rows, trees) index arrays to a few MB)
_CHUNK = 2048


class FlatForest(ClassifierMixin, BaseEstimator):
    """A fitted forest (`from_sklearn`) that predicts like it, from flat arrays (pickles as arrays).

    Node i of the concatenated trees: internal nodes send a sample to `children[2 i]` when
    `x[feature[i]] <= threshold[i]`, else to `children[2 i + 1]`; a leaf is its own child on both sides
    (threshold +inf), so walking `depth` steps from the roots always ends on the leaves.
    `leaf_value[i]` indexes `values`, the distinct class distributions of the leaves.
    """

    def __init__(
        self,
        feature=None,
        threshold=None,
        children=None,
        leaf_value=None,
        values=None,
        roots=None,
        depth: int = 0,
        classes=tuple(range(10)),
    ):
        self.feature = feature
        self.threshold = threshold
        self.children = children
        self.leaf_value = leaf_value
        self.values = values
        self.roots = roots
        self.depth = depth
        self.classes = classes

    @classmethod
    def from_sklearn(cls, forest) -> FlatForest:
        """Flatten a fitted `RandomForestClassifier` / `ExtraTreesClassifier` (single output)."""
        trees = [estimator.tree_ for estimator in forest.estimators_]
        sizes = np.array([t.node_count for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        n_classes = len(forest.classes_)
        feature = np.concatenate([t.feature for t in trees]).astype(np.int32)
        threshold = np.concatenate([t.threshold for t in trees])
        left = np.concatenate([t.children_left + (t.children_left >= 0) * o for t, o in zip(trees, offsets)])
        right = np.concatenate([t.children_right + (t.children_right >= 0) * o for t, o in zip(trees, offsets)])
        value = np.concatenate([t.value.reshape(t.node_count, n_classes) for t in trees])
        value = value / np.maximum(value.sum(axis=1, keepdims=True), 1e-300)  # counts or fractions
        leaf = left < 0
        value[~leaf] = 0.0  # only leaves are ever read: fewer distinct rows
        index = np.arange(len(leaf))
        left = np.where(leaf, index, left)
        right = np.where(leaf, index, right)
        feature = np.where(leaf, 0, feature)
        # X is compared as float32 (as scikit-learn does): x <= t  <=>  x <= the largest float32 <= t
        t32 = threshold.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) > threshold, np.nextafter(t32, np.float32(-np.inf)), t32)
        t32 = np.where(leaf, np.float32(np.inf), t32)
        values, leaf_value = np.unique(value.astype(np.float32), axis=0, return_inverse=True)
        return cls(
            feature=feature.astype(np.int16 if feature.max() < 2**15 else np.int32),
            threshold=t32.astype(np.float32),
            children=np.stack([left, right], axis=1).reshape(-1).astype(np.int32),
            leaf_value=leaf_value.reshape(-1).astype(np.uint8 if len(values) <= 256 else np.int32),
            values=values,
            roots=offsets.astype(np.int32),
            depth=int(max(t.max_depth for t in trees)),
            classes=tuple(int(c) for c in forest.classes_),
        )

    @property
    def classes_(self):
        return np.asarray(self.classes)

    @property
    def n_estimators(self) -> int:
        return len(self.roots)

    def __sklearn_is_fitted__(self) -> bool:
        return self.roots is not None

    def fit(self, X, y=None):
        return self

    def _leaves(self, X: np.ndarray) -> np.ndarray:
        """(n, n_trees) node index of the leaf each sample reaches in each tree."""
        n, n_features = X.shape
        feature, threshold, children = self.feature, self.threshold, self.children
        if n == 1:  # one drawing (the API): the same walk without the row offsets
            x = X[0]
            node = self.roots.astype(np.intp)
            for step in range(self.depth):
                node = children[2 * node + (x[feature[node]] > threshold[node])]
                if step % 4 == 3 and np.array_equal(children[2 * node], node):
                    break
            return node[None, :]
        flat = X.reshape(-1)
        base = (np.arange(n, dtype=np.int64) * n_features)[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).astype(np.intp)
        for step in range(self.depth):
            right = flat[base + feature[node]] > threshold[node]
            node = children[2 * node + right]
            if step % 8 == 7 and np.array_equal(children[2 * node], node):  # every cursor is on a leaf
                break
        return node

    def predict_proba(self, X) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        out = np.empty((len(X), self.values.shape[1]), np.float64)
        for lo in range(0, len(X), _CHUNK):
            leaves = self._leaves(X[lo : lo + _CHUNK])
            out[lo : lo + _CHUNK] = self.values[self.leaf_value[leaves]].mean(axis=1, dtype=np.float64)
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
