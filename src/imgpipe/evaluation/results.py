"""The files of one model's evaluation (``evaluation/<model>/``): their one writer and their readers.

The evaluate stage writes them; the report and ``compare`` read them. Only this module knows
their names and layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PER_CLASS = "per_class.csv"
CONFUSION = "confusion_matrix.csv"
PREDICTIONS = "predictions.csv"            # one (actual, predicted) row per test image; DVC's confusion plot reads it
CALIBRATION = "calibration.csv"
EXPLANATIONS = "explanations.npz"
_EXPLANATION_CONTEXT = ("images", "captions", "indices")


def save_evaluation(results: dict[str, Any], folder: Path) -> None:
    """Write the per-class table, confusion matrix, prediction pairs and calibration bins of one model."""
    folder.mkdir(parents=True, exist_ok=True)
    results["per_class"].to_csv(folder / PER_CLASS, index=False)
    results["confusion"].to_csv(folder / CONFUSION)
    results["pairs"].to_csv(folder / PREDICTIONS, index=False)
    results["calibration"].to_csv(folder / CALIBRATION, index=False)


def load_per_class(folder: Path) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support."""
    return pd.read_csv(folder / PER_CLASS)


def load_confusion(folder: Path) -> pd.DataFrame:
    """Confusion-matrix counts (rows actual, columns predicted)."""
    return pd.read_csv(folder / CONFUSION, index_col=0)


def load_prediction_pairs(folder: Path) -> pd.DataFrame:
    """The (actual, predicted) class names of every test image, in test-set order."""
    return pd.read_csv(folder / PREDICTIONS)


def load_calibration(folder: Path) -> pd.DataFrame:
    """The reliability-diagram bins."""
    return pd.read_csv(folder / CALIBRATION)


def save_explanations(maps: dict[str, np.ndarray], indices: np.ndarray, images: np.ndarray, captions: list[str],
                      folder: Path) -> None:
    """Write the interpretability maps of the sample test images, with the images and their captions."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / EXPLANATIONS, indices=indices, images=images, captions=np.array(captions),
                        **{name: values.astype(np.float16) for name, values in maps.items()})


def load_explanations(folder: Path) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """The sample images, their captions and the maps by method name."""
    with np.load(folder / EXPLANATIONS) as archive:
        return (archive["images"], [str(caption) for caption in archive["captions"]],
                {method: archive[method].astype(np.float32) for method in archive.files
                 if method not in _EXPLANATION_CONTEXT})
