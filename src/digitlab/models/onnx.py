"""onnxruntime inference behind the scikit-learn `predict_proba` interface.

The CNN needs no torch at serving time. The session is built once per process
(never pickled) with one intra-op thread: single drawings are small, and API workers run in parallel.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: the output an ensemble's graph adds: each member's own probabilities (training/cnn_net.MEMBERS_NAME)
MEMBERS_OUTPUT = "member_probabilities"


def make_session(model_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class OnnxClassifier(ClassifierMixin, BaseEstimator):
    """A fitted classifier stored as ONNX bytes; the output named `probabilities` is returned."""

    def __init__(self, model_bytes: bytes = b"", classes=tuple(range(10))):
        self.model_bytes = model_bytes
        self.classes = classes

    @property
    def classes_(self):
        return np.asarray(self.classes)

    def __sklearn_is_fitted__(self) -> bool:
        return bool(self.model_bytes)

    def _session(self):
        session = self.__dict__.get("_ort_session")
        if session is None:
            session = self.__dict__["_ort_session"] = make_session(self.model_bytes)
            self.__dict__["_ort_input"] = session.get_inputs()[0].name
            self.__dict__["_ort_outputs"] = {o.name for o in session.get_outputs()}
        return session

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_ort_session", None)
        state.pop("_ort_input", None)
        state.pop("_ort_outputs", None)
        return state

    def fit(self, X, y=None):
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.predict_proba_members(X, members=False)[0]

    def predict_proba_members(self, X, members: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (n, 10), and for an ensemble each member's own (n, members, 10) or None), in one
        run of the network: the members' disagreement is a second opinion for the "not sure" flag."""
        session = self._session()
        X = np.ascontiguousarray(X, dtype=np.float32)
        names = ["probabilities"]
        if members and MEMBERS_OUTPUT in self.__dict__["_ort_outputs"]:
            names.append(MEMBERS_OUTPUT)
        out = session.run(names, {self.__dict__["_ort_input"]: X})
        proba = np.asarray(out[0], dtype=np.float64)
        own = np.asarray(out[1], dtype=np.float64) if len(out) > 1 else None
        return proba / proba.sum(axis=1, keepdims=True), own

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

