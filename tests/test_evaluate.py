"""Evaluation metrics on predictions whose answers are known by hand."""

from __future__ import annotations

import numpy as np

from imgpipe.evaluation.evaluate import evaluate


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    probabilities = np.eye(2)[predicted]
    results = evaluate(probabilities, labels, ("a", "b"), resamples=200, level=0.95, calibration_bins=5, seed=0)
    metrics = results["metrics"]
    assert metrics["accuracy"] == 0.75
    # class a: precision 1, recall 0.5; class b: precision 2/3, recall 1
    assert np.isclose(metrics["precision_macro"], (1 + 2 / 3) / 2)
    assert np.isclose(metrics["recall_macro"], 0.75)
    assert np.isclose(metrics["f1_macro"], (2 / 3 + 0.8) / 2)
    assert results["confusion"].loc["a", "b"] == 1 and results["confusion"].loc["b", "b"] == 2
    assert results["per_class"]["support"].tolist() == [2, 2]
    assert results["pairs"].iloc[1].tolist() == ["a", "b"]
    assert metrics["accuracy_ci_low"] <= 0.75 <= metrics["accuracy_ci_high"]
    assert results["calibration"]["count"].sum() == 4
