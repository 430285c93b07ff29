"""The evaluate stage: test-set predictions and the metrics a reviewer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from imgpipe.artifacts.files import atomic_path
from imgpipe.data.dataset import load_labels, load_rows
from imgpipe.data.split import load_split
from imgpipe.evaluation.statistics import (
    HEADLINE_METRICS, bootstrap_intervals, class_metrics, confusion_counts, expected_calibration_error,
    metrics_from_confusion,
)
from imgpipe.evaluation.statistics import calibration_bins as calibration_table


def load_test_data(dataset_path: Path, split_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Test images, labels and class names."""
    images, labels = load_rows(dataset_path, load_split(split_path).test)
    return images, labels, load_labels(dataset_path).class_names


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities for every image, shape (N, classes)."""
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)


def summary_metrics(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1, and the number of images scored."""
    scores = metrics_from_confusion(confusion_counts(labels, predicted, num_classes))
    return {**{name: float(scores[name]) for name in HEADLINE_METRICS}, "test_images": int(len(labels))}


def per_class_table(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Precision, recall, F1 and support for each class."""
    scores = class_metrics(confusion_counts(labels, predicted, len(class_names)))
    return pd.DataFrame({"class": class_names, **scores}).round(4)


def confusion_table(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Confusion matrix counts with class names on both axes (rows: actual, columns: predicted)."""
    counts = confusion_counts(labels, predicted, len(class_names))
    return pd.DataFrame(counts, index=pd.Index(class_names, name="actual"),
                        columns=pd.Index(class_names, name="predicted"))


def prediction_pairs(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """One (actual, predicted) row per test image: the input of DVC's confusion plot template."""
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[labels], "predicted": names[predicted]})


def metrics_with_uncertainty(probabilities: np.ndarray, labels: np.ndarray, resamples: int, level: float,
                             calibration_bins: int, seed: int) -> dict[str, float]:
    """Headline metrics, their bootstrap confidence intervals and the expected calibration error."""
    predicted = probabilities.argmax(axis=1)
    metrics: dict[str, float] = summary_metrics(labels, predicted, probabilities.shape[1])
    intervals = bootstrap_intervals(labels, predicted, probabilities.shape[1], resamples, seed, level)
    for name, (low, high) in intervals.items():
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
    metrics["confidence_level"] = level
    metrics["expected_calibration_error"] = expected_calibration_error(probabilities, labels, calibration_bins)
    return metrics


def confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrong predictions made with the highest confidence, most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]


def mistake_captions(probabilities: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                     class_names: tuple[str, ...]) -> list[str]:
    """'true → predicted (confidence)' for each image."""
    predicted = probabilities.argmax(axis=1)
    return [f"{class_names[labels[i]]} → {class_names[predicted[i]]}\n({probabilities[i, predicted[i]]:.0%})"
            for i in indices]


def evaluate(probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], resamples: int,
             level: float, calibration_bins: int, seed: int) -> dict[str, Any]:
    """All evaluation results of one model, as data."""
    predicted = probabilities.argmax(axis=1)
    return {"metrics": metrics_with_uncertainty(probabilities, labels, resamples, level, calibration_bins, seed),
            "calibration": calibration_table(probabilities, labels, calibration_bins),
            "per_class": per_class_table(labels, predicted, class_names),
            "confusion": confusion_table(labels, predicted, class_names),
            "pairs": prediction_pairs(labels, predicted, class_names)}


def save_probabilities(probabilities: np.ndarray, path: Path) -> None:
    """Write the test-set class probabilities (float32) for later comparison of models."""
    with atomic_path(path) as partial, partial.open("wb") as handle:
        np.save(handle, probabilities.astype(np.float32))


def load_probabilities(path: Path) -> np.ndarray:
    """The test-set class probabilities the evaluate stage saved."""
    return np.load(path)
