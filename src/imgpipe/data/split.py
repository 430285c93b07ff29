"""Train / validation / test split: an official test set stays the test set; otherwise one is held out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from imgpipe.artifacts.files import atomic_path
from imgpipe.data.dataset import ORIGIN_TEST, ORIGIN_TRAIN


@dataclass(frozen=True)
class SplitIndices:
    """Row indices into the cleaned dataset for each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def limit_per_class(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``rows`` with at most ``limit`` rows of each label (0 keeps all)."""
    if limit == 0:
        return rows
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(rows[labels[rows] == label])[:limit] for label in np.unique(labels[rows])]
    return np.sort(np.concatenate(kept))


def split_dataset(labels: np.ndarray, origin: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                  limit: int = 0) -> SplitIndices:
    """Stratified train / validation (/ test) split; an official test set, when the source has one, stays the test set.

    Sources without one (class folders, manifests) hold out ``test_fraction`` of every class as
    the test set first. ``limit`` caps the images per class in each part, for quick runs and tests.
    """
    test = np.flatnonzero(origin == ORIGIN_TEST)
    train_rows = np.flatnonzero(origin == ORIGIN_TRAIN)
    if not len(test):
        train_rows, test = train_test_split(train_rows, test_size=test_fraction, random_state=seed,
                                            stratify=labels[train_rows])
    train, val = train_test_split(train_rows, test_size=val_fraction, random_state=seed,
                                  stratify=labels[train_rows])
    return SplitIndices(*(limit_per_class(np.sort(rows), labels, limit, seed) for rows in (train, val, test)))


def count_per_class(labels: np.ndarray, indices: SplitIndices, class_names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Images per class in each part, for the split report."""
    parts = {"train": indices.train, "val": indices.val, "test": indices.test}
    return {part: {name: int(np.sum(labels[rows] == label)) for label, name in enumerate(class_names)}
            for part, rows in parts.items()}


def save_split(indices: SplitIndices, path: Path) -> None:
    """Write the three index arrays atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        np.savez(partial, train=indices.train, val=indices.val, test=indices.test)


def load_split(path: Path) -> SplitIndices:
    """Read the index arrays written by :func:`save_split`."""
    with np.load(path) as archive:
        return SplitIndices(archive["train"], archive["val"], archive["test"])


def split_sizes(indices: SplitIndices, manifest: dict[str, Any]) -> dict[str, int]:
    """Images in each part and shards in each sharded part: the split stage's metrics."""
    sizes = {f"{part}_images": len(rows) for part, rows in vars(indices).items()}
    return sizes | {f"{part}_shards": len(entry["shards"]) for part, entry in manifest["parts"].items()}
