"""Decode the raw IDX files, check them, and drop images that cannot be trusted.

Pixels stay ``uint8``; normalization happens inside each model so an exported model
takes raw images. The cleaning report lists every dropped image and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgpipe.idx import IdxFormatError, load_idx

LOGGER = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ORIGIN_TRAIN, ORIGIN_TEST = 0, 1


@dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) uint8, integer labels, and the official split each came from."""

    images: np.ndarray
    labels: np.ndarray
    origin: np.ndarray
    class_names: tuple[str, ...]


def check_pair(images: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> None:
    """Raise if images and labels disagree in count or labels fall outside ``0..num_classes-1``."""
    if images.ndim not in (3, 4):
        raise IdxFormatError(f"{source}: images have shape {images.shape}; expected (N, H, W) or (N, H, W, C).")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxFormatError(f"{source}: {labels.shape} labels for {len(images)} images; expected one label per image.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxFormatError(
            f"{source}: labels span {labels.min()}..{labels.max()}; expected 0..{num_classes - 1}.")


def load_raw_idx(raw_dir: Path, class_names: tuple[str, ...] = FASHION_MNIST_CLASSES) -> Dataset:
    """Read the official train and test IDX pairs into one dataset with an origin column."""
    images, labels, origin = [], [], []
    for code, (split, (image_file, label_file)) in enumerate(IDX_FILES.items()):
        split_images = load_idx(raw_dir / image_file)
        split_labels = load_idx(raw_dir / label_file)
        check_pair(split_images, split_labels, len(class_names), f"{raw_dir / image_file} + {label_file}")
        if split_images.ndim == 3:
            split_images = split_images[..., np.newaxis]
        images.append(split_images)
        labels.append(split_labels.astype(np.int64))
        origin.append(np.full(len(split_labels), code, dtype=np.int8))
    shapes = {array.shape[1:] for array in images}
    if len(shapes) != 1:
        raise IdxFormatError(f"{raw_dir}: train and test images differ in shape {sorted(shapes)}; expected one shape.")
    return Dataset(np.concatenate(images), np.concatenate(labels), np.concatenate(origin), class_names)


def find_blank(images: np.ndarray, max_std: float) -> np.ndarray:
    """Boolean mask of images whose pixel standard deviation is at most ``max_std``."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat.std(axis=1) <= max_std


def find_conflicting_duplicates(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean mask of images whose exact pixel copy elsewhere carries a different label."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, group = np.unique(keys, return_inverse=True)
    group = group.ravel()
    low = np.full(group.max() + 1 if len(group) else 0, np.iinfo(np.int64).max)
    high = np.full_like(low, np.iinfo(np.int64).min)
    np.minimum.at(low, group, labels)
    np.maximum.at(high, group, labels)
    return low[group] != high[group]


def count_exact_duplicates(images: np.ndarray) -> int:
    """Number of images that repeat an earlier image pixel for pixel."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    return int(len(keys) - len(np.unique(keys)))


def clean(dataset: Dataset, blank_max_std: float, drop_conflicting_duplicates: bool) -> tuple[Dataset, dict[str, Any]]:
    """Drop blank images and conflicting duplicates; return the kept dataset and a cleaning report."""
    reasons = {"blank": find_blank(dataset.images, blank_max_std)}
    if drop_conflicting_duplicates:
        reasons["duplicate_with_conflicting_label"] = find_conflicting_duplicates(dataset.images, dataset.labels)
    dropped = np.zeros(len(dataset.labels), dtype=bool)
    listing = []
    for reason, mask in reasons.items():
        for index in np.flatnonzero(mask & ~dropped):
            listing.append({"index": int(index), "origin": ("train", "test")[dataset.origin[index]],
                            "label": dataset.class_names[dataset.labels[index]], "reason": reason})
        dropped |= mask
    keep = ~dropped
    kept = Dataset(dataset.images[keep], dataset.labels[keep], dataset.origin[keep], dataset.class_names)
    report = {
        "input_images": int(len(dataset.labels)),
        "kept_images": int(keep.sum()),
        "dropped_images": int(dropped.sum()),
        "dropped_by_reason": {reason: int(mask.sum()) for reason, mask in reasons.items()},
        "exact_duplicates_kept": count_exact_duplicates(kept.images),
        "image_shape": list(kept.images.shape[1:]),
        "kept_per_class": summarize_classes(kept),
        "dropped": listing,
    }
    LOGGER.info("kept %d of %d images; dropped %s", report["kept_images"], report["input_images"],
                report["dropped_by_reason"])
    return kept, report


def summarize_classes(dataset: Dataset) -> dict[str, dict[str, int]]:
    """Per class, how many images come from the official train and test sets."""
    return {
        name: {split: int(np.sum((dataset.labels == label) & (dataset.origin == code)))
               for code, split in enumerate(("train", "test"))}
        for label, name in enumerate(dataset.class_names)
    }


def save_dataset(dataset: Dataset, path: Path) -> None:
    """Write the cleaned dataset as one compressed NumPy archive (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(partial, images=dataset.images, labels=dataset.labels, origin=dataset.origin,
                        class_names=np.array(dataset.class_names))
    partial.replace(path)


def load_dataset(path: Path) -> Dataset:
    """Read the dataset written by :func:`save_dataset`."""
    with np.load(path) as archive:
        return Dataset(archive["images"], archive["labels"], archive["origin"],
                       tuple(str(name) for name in archive["class_names"]))


def cleaning_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The counts of a cleaning report, without the per-image listing, for `dvc metrics`."""
    return {key: report[key] for key in
            ("input_images", "kept_images", "dropped_images", "dropped_by_reason", "exact_duplicates_kept")}
