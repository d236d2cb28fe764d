"""Classification scores in numpy: the few formulas evaluate needs, without scikit-learn's start-up.

`import sklearn.metrics` loads scipy.stats and costs evaluate more than all its work (about 2 s of
a 5 s stage on a busy 2-core machine, `python -X importtime`). These give scikit-learn's numbers
to the last bit (tests/test_scores.py compares them with sklearn.metrics on random and tied inputs).
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0  # sklearn's zero_division=0


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the positive class (1), 0 where undefined (zero_division=0)."""
    true, predicted = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp, true_sum, pred_sum = int(np.sum(true & predicted)), int(np.sum(true)), int(np.sum(predicted))
    return {"precision": _ratio(tp, pred_sum), "recall": _ratio(tp, true_sum),
            "f1": _ratio(2 * tp, true_sum + pred_sum)}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean F1 over every class found in y_true or y_pred."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    f1 = [_ratio(2 * int(np.sum((y_true == label) & (y_pred == label))),
                 int(np.sum(y_true == label)) + int(np.sum(y_pred == label))) for label in labels]
    return float(np.mean(np.asarray(f1, dtype=np.float64)))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn.metrics.roc_curve gives them (drop_intermediate=True): one point per
    distinct score, highest first, the points inside a straight run dropped, (0, 0) at threshold inf first."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    score, y_true = np.asarray(score, dtype=np.float64)[order], np.asarray(y_true)[order]
    last = np.r_[np.flatnonzero(np.diff(score)), y_true.size - 1]
    tps = np.cumsum(y_true == 1, dtype=np.float64)[last]
    fps, thresholds = 1 + last - tps, score[last]
    if len(fps) > 2:
        corners = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[corners], tps[corners], thresholds[corners]
    tps, fps, thresholds = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """The area under roc_curve (trapezoids); nan when y_true holds one class only."""
    if len(np.unique(y_true)) != 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.trapezoid(tpr, fpr))
