"""How often the `uncertain` flag fires: on scribbles (should), on correct answers (should not)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from digitlab.detector.runtime import UncertaintyDetector
from digitlab.models.registry import predict_opinions as registry_predict_opinions


def flag_rates(
    flags_digits: np.ndarray,
    correct: np.ndarray,
    flags_scribbles: np.ndarray,
) -> dict[str, Any]:
    """Rates of one model: share of scribbles flagged, of correct / wrong digit answers flagged."""
    flags_digits, correct = np.asarray(flags_digits, bool), np.asarray(correct, bool)
    flags_scribbles = np.asarray(flags_scribbles, bool)

    def share(mask):
        return round(float(mask.mean()), 4) if mask.size else None

    return {
        "scribbles_flagged": share(flags_scribbles),
        "correct_flagged": share(flags_digits[correct]),
        "wrong_flagged": share(flags_digits[~correct]),
        "digits_flagged": share(flags_digits),
        "accuracy_unflagged": share(correct[~flags_digits]),
        "n_scribbles": int(flags_scribbles.size),
        "n_digits": int(flags_digits.size),
        "n_correct": int(correct.sum()),
    }


def predict_with_opinion(fn: Callable, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`fn(X)` as float64 (n, 10), and the model's own second opinion when `fn` belongs to a model that has
    one (`models.registry.predict_with_opinion`: the CNN's networks')."""
    return predict_opinions(fn, X)[:2]


def predict_opinions(fn: Callable, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`predict_with_opinion`, and the answer before the model asked its partner (None if it asked none;
    `models.registry.predict_opinions`): the flag is computed on both, as the API does."""
    if not len(X):
        return np.zeros((0, 10)), None, None
    proba, own, alone = registry_predict_opinions(fn, X)
    return np.asarray(proba, np.float64), own, alone


def uncertainty_rates(
    detector: UncertaintyDetector,
    predict_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    X_digits: np.ndarray,
    labels: np.ndarray,
    X_scribbles: np.ndarray,
    *,
    ok: np.ndarray | None = None,
    scribbles_ok: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model: how often the "uncertain" rule fires on scribbles and on correct digit answers.

    For `evaluate_drawn`: `X_digits` (n, 784) preprocessed drawn digits with `labels`, `X_scribbles`
    (m, 784) preprocessed non-digits; `ok` / `scribbles_ok` mark the drawings the preprocessing
    accepted (a refused digit is a wrong answer; a refused scribble gets no digit, so it counts as
    flagged). Returns {model: flag_rates(...) + "t_model"}, plus "t_detector" under the key "_rule".
    """
    X_digits = np.asarray(X_digits, np.float32).reshape(-1, 784)
    X_scribbles = np.asarray(X_scribbles, np.float32).reshape(-1, 784)
    ok = np.ones(len(X_digits), bool) if ok is None else np.asarray(ok, bool)
    scribbles_ok = np.ones(len(X_scribbles), bool) if scribbles_ok is None else np.asarray(scribbles_ok, bool)
    p_d, d_d = detector.detector_outputs(X_digits) if len(X_digits) else (np.zeros(0), np.zeros((0, 10)))
    p_s, d_s = detector.detector_outputs(X_scribbles) if len(X_scribbles) else (np.zeros(0), np.zeros((0, 10)))
    r_d, r_s = (detector.reference_outputs(X, list(predict_fns)) for X in (X_digits, X_scribbles))  # the CNN's
    out: dict[str, dict[str, Any]] = {"_rule": {"t_detector": detector.t_detector}}
    for name, fn in predict_fns.items():
        proba, own, alone = predict_opinions(fn, X_digits)
        s_proba, s_own, s_alone = predict_opinions(fn, X_scribbles)
        correct = ok & (proba.argmax(axis=1) == np.asarray(labels)) if len(proba) else np.zeros(0, bool)
        flags = detector.flags(name, X_digits, proba, p_not_digit=p_d, digit_proba=d_d, reference=r_d,
                               own_opinion=own, alone=alone) & ok | ~ok  # fmt: skip
        s_flags = detector.flags(name, X_scribbles, s_proba, p_not_digit=p_s, digit_proba=d_s,
                                 reference=r_s, own_opinion=s_own, alone=s_alone) | ~scribbles_ok  # fmt: skip
        out[name] = {
            **flag_rates(flags, correct, s_flags),
            "t_model": detector.threshold(name),
            "t_joint": detector.joint_threshold(name),
        }
    return out
