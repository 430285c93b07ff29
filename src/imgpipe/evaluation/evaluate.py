"""The evaluate stage: test-set predictions and the metrics a reviewer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from imgpipe.data.dataset import load_labels, load_rows
from imgpipe.data.split import load_split
from imgpipe.evaluation.statistics import bootstrap_intervals, expected_calibration_error
from imgpipe.evaluation.statistics import calibration_bins as calibration_table


def load_test_data(dataset_path: Path, split_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Test images, labels and class names."""
    images, labels = load_rows(dataset_path, load_split(split_path).test)
    return images, labels, load_labels(dataset_path).class_names


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities for every image, shape (N, classes)."""
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)


def summary_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(labels, predicted)), "precision_macro": float(precision),
            "recall_macro": float(recall), "f1_macro": float(f1), "test_images": int(len(labels))}


def per_class_table(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Precision, recall, F1 and support for each class."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(len(class_names)), zero_division=0)
    return pd.DataFrame({"class": class_names, "precision": precision, "recall": recall, "f1": f1,
                         "support": support}).round(4)


def confusion_table(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Confusion matrix counts with class names on both axes (rows: actual, columns: predicted)."""
    counts = confusion_matrix(labels, predicted, labels=range(len(class_names)))
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
    metrics: dict[str, float] = summary_metrics(labels, predicted)
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


def save_evaluation(results: dict[str, Any], folder: Path) -> None:
    """Write the per-class table, confusion data and probabilities of one model."""
    folder.mkdir(parents=True, exist_ok=True)
    results["per_class"].to_csv(folder / "per_class.csv", index=False)
    results["confusion"].to_csv(folder / "confusion_matrix.csv")
    results["pairs"].to_csv(folder / "predictions.csv", index=False)
    results["calibration"].to_csv(folder / "calibration.csv", index=False)


def save_explanations(maps: dict[str, np.ndarray], indices: np.ndarray, images: np.ndarray, captions: list[str],
                      path: Path) -> None:
    """Write the interpretability maps of the sample test images, with the images and their captions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, indices=indices, images=images, captions=np.array(captions),
                        **{name: values.astype(np.float16) for name, values in maps.items()})


def save_probabilities(probabilities: np.ndarray, path: Path) -> None:
    """Write the test-set class probabilities (float32) for later comparison of models."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, probabilities.astype(np.float32))
