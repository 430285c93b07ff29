"""Uncertainty and model-comparison statistics for the evaluate and report stages.

- percentile-bootstrap confidence intervals of accuracy and macro precision / recall / F1;
- McNemar's test of two models on the same test images (exact binomial when the
  discordant pairs are few or when asked, chi-square with continuity correction otherwise);
- the paired-bootstrap confidence interval of the difference between two models' metrics;
- expected calibration error and the per-bin table behind a reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

HEADLINE_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
EXACT_MCNEMAR_BELOW = 25


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) by one bincount; accepts a leading resample axis."""
    flat = labels * num_classes + predicted
    if flat.ndim == 1:
        return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
    offsets = np.arange(len(flat))[:, None] * num_classes**2
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * num_classes**2)
    return counts.reshape(len(flat), num_classes, num_classes)


def class_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class (the last axis), zero where undefined.

    The formulas are scikit-learn's (F1 = 2·TP / (predicted + actual)), so the numbers agree with
    ``sklearn.metrics`` to the last bit; this form also takes a leading resample axis.
    """
    true_positive = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    predicted = confusion.sum(axis=-2)
    actual = confusion.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"precision": np.where(predicted > 0, true_positive / predicted, 0.0),
                "recall": np.where(actual > 0, true_positive / actual, 0.0),
                "f1": np.where(predicted + actual > 0, 2 * true_positive / (predicted + actual), 0.0),
                "support": actual}


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro precision, recall and F1 of a confusion matrix (or a stack of them)."""
    per_class = class_metrics(confusion)
    correct = np.diagonal(confusion, axis1=-2, axis2=-1).sum(axis=-1)
    return {"accuracy": correct / confusion.sum(axis=(-2, -1)),
            **{f"{name}_macro": per_class[name].mean(axis=-1) for name in ("precision", "recall", "f1")}}


def bootstrap_intervals(labels: np.ndarray, predicted: np.ndarray, num_classes: int, resamples: int, seed: int,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap confidence interval of every headline metric, resampling test images."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), size=(resamples, len(labels)))
    scores = metrics_from_confusion(confusion_counts(labels[rows], predicted[rows], num_classes))
    tail = (1 - level) / 2 * 100
    return {name: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            for name, values in scores.items()}


def paired_bootstrap_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray, num_classes: int,
                                resamples: int, seed: int, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap interval of ``second − first`` for every headline metric: both models are
    scored on the same resampled test images, so the interval reflects the pairing."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), size=(resamples, len(labels)))
    before = metrics_from_confusion(confusion_counts(labels[rows], first[rows], num_classes))
    after = metrics_from_confusion(confusion_counts(labels[rows], second[rows], num_classes))
    tail = (1 - level) / 2 * 100
    return {name: (float(np.percentile(after[name] - before[name], tail)),
                   float(np.percentile(after[name] - before[name], 100 - tail))) for name in before}


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two classifiers on the same images."""

    only_first_correct: int
    only_second_correct: int
    statistic: float
    p_value: float
    method: str


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray, exact: bool = False) -> McNemarResult:
    """Test whether two models err on different images more often than chance would explain."""
    b = int(np.sum(first_correct & ~second_correct))
    c = int(np.sum(~first_correct & second_correct))
    if b + c == 0:
        return McNemarResult(b, c, 0.0, 1.0, "no discordant pairs")
    if exact or b + c < EXACT_MCNEMAR_BELOW:
        p_value = stats.binomtest(min(b, c), b + c, 0.5).pvalue
        return McNemarResult(b, c, float(min(b, c)), float(min(1.0, p_value)), "exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemarResult(b, c, float(statistic), float(stats.chi2.sf(statistic, df=1)),
                         "chi-square, continuity-corrected")


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> pd.DataFrame:
    """Per confidence bin: count, mean confidence and accuracy of the top prediction."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "correct": correct})
    table = frame.groupby("bin").agg(count=("correct", "size"), confidence=("confidence", "mean"),
                                     accuracy=("correct", "mean"))
    table = table.reindex(range(bins)).fillna({"count": 0})
    table.insert(0, "upper_edge", edges[1:])
    table.insert(0, "lower_edge", edges[:-1])
    return table.reset_index(drop=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Count-weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    table = calibration_bins(probabilities, labels, bins).dropna()
    gaps = (table["confidence"] - table["accuracy"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())
