"""Statistics on cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from imgpipe.evaluation.statistics import (bootstrap_intervals, confusion_counts, expected_calibration_error, mcnemar,
                                metrics_from_confusion)


def test_metrics_from_confusion_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    predicted = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 4, 500))
    predicted[predicted == 3] = 2            # class 3 is never predicted: precision undefined → 0
    ours = metrics_from_confusion(confusion_counts(labels, predicted, 4))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert (ours["precision_macro"], ours["recall_macro"], ours["f1_macro"]) == pytest.approx((precision, recall, f1))


def test_mcnemar_on_hand_built_tables() -> None:
    # 10 images only the first model gets right, 2 only the second: exact two-sided p = 2·(1+12+66)/4096.
    first = np.array([True] * 10 + [False] * 2 + [True] * 50 + [False] * 5)
    second = np.array([False] * 10 + [True] * 2 + [True] * 50 + [False] * 5)
    exact = mcnemar(first, second)
    assert (exact.only_first_correct, exact.only_second_correct, exact.method) == (10, 2, "exact binomial")
    assert exact.p_value == pytest.approx(158 / 4096)
    # 40 vs 20 discordant pairs: chi-square = (|40-20|-1)² / 60 = 6.0167, p = 0.01418.
    first = np.array([True] * 40 + [False] * 20)
    large = mcnemar(first, ~first)
    assert large.statistic == pytest.approx(361 / 60)
    assert large.p_value == pytest.approx(0.014178, abs=1e-5)
    assert mcnemar(first, first).p_value == 1.0


def test_a_perfectly_calibrated_predictor_has_zero_ece() -> None:
    # Confidence 0.8 everywhere and exactly 80% correct; confidence 0.6 and exactly 60% correct.
    labels = np.zeros(100, int)
    probabilities = np.zeros((100, 3))
    probabilities[:50] = [0.8, 0.1, 0.1]
    probabilities[10:50] = probabilities[10:50][:, [0, 1, 2]]
    probabilities[50:] = [0.6, 0.3, 0.1]
    labels[:10] = 1                          # 40 of 50 right at 0.8
    labels[50:70] = 2                        # 30 of 50 right at 0.6
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.0, abs=1e-12)
    overconfident = np.tile([0.99, 0.005, 0.005], (100, 1))
    assert expected_calibration_error(overconfident, labels, bins=10) == pytest.approx(0.99 - 0.7)


def test_bootstrap_interval_covers_the_true_accuracy() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(20):
        labels = rng.integers(0, 5, 2000)
        predicted = np.where(rng.random(2000) < 0.85, labels, (labels + 1) % 5)   # true accuracy 0.85
        low, high = bootstrap_intervals(labels, predicted, 5, resamples=300, seed=trial)["accuracy"]
        assert high - low < 0.05
        hits += low <= 0.85 <= high
    assert hits >= 16                        # a 95% interval: at least 16 of 20 cover the truth
