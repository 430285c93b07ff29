"""The cleaned dataset as the stages after preprocessing read it (light: no decoding code)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ORIGIN_TRAIN, ORIGIN_TEST = 0, 1


@dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) uint8, integer labels, and the official split each came from."""

    images: np.ndarray
    labels: np.ndarray
    origin: np.ndarray
    class_names: tuple[str, ...]


def load_dataset(path: Path) -> Dataset:
    """Read the dataset the preprocess stage wrote."""
    with np.load(path) as archive:
        return Dataset(archive["images"], archive["labels"], archive["origin"],
                       tuple(str(name) for name in archive["class_names"]))
