"""heart's and MNIST's numpy scores give scikit-learn's numbers to the last bit, ties and degenerate cases included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from stages.tasks import heart, mnist

RNG_SEEDS = range(40)


def binary_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and float32 scores; every other case rounds the scores to a few levels, so many tie."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n)
    score = np.clip(rng.normal(0.3 + 0.4 * y, 0.25), 0, 1).astype(np.float32)
    return y, (np.round(score * 4) / 4).astype(np.float32) if seed % 2 else score


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_binary_scores_and_roc_equal_sklearn(seed: int):
    y, score = binary_case(seed)
    predicted = (score >= 0.5).astype(int)
    assert heart.binary_scores(y, predicted) == {
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, zero_division=0),
        "recall": skm.recall_score(y, predicted, zero_division=0),
        "f1": skm.f1_score(y, predicted, zero_division=0)}
    if len(np.unique(y)) == 2:
        ours, theirs = heart.roc_curve(y, score), skm.roc_curve(y, score)
        for mine, sklearn_s in zip(ours, theirs):
            assert mine.dtype == sklearn_s.dtype and np.array_equal(mine, sklearn_s)
        assert heart.roc_auc(y, score) == skm.roc_auc_score(y, score)


def test_no_positive_prediction_or_label_scores_zero_as_sklearn_with_zero_division_0():
    y, none = np.array([0, 0, 1]), np.zeros(3, int)
    assert heart.binary_scores(y, none) == {"accuracy": 2 / 3, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert heart.binary_scores(np.zeros(3, int), none)["f1"] == skm.f1_score(np.zeros(3, int), none, zero_division=0)
    assert np.isnan(heart.roc_auc(np.zeros(3, int), np.array([0.1, 0.2, 0.3])))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_macro_f1_equals_sklearn_with_missing_and_extra_classes(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    y = rng.integers(0, 10, n)
    # A noisy copy: some classes never predicted, some predicted that never occur.
    predicted = np.where(rng.random(n) < 0.7, y, rng.integers(0, 12, n))
    assert mnist.macro_f1(y, predicted) == skm.f1_score(y, predicted, average="macro")
