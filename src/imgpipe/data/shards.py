"""The train and validation parts as NumPy shards: what training reads, in memory or streamed.

The split stage writes each part as numbered ``.npz`` shards of at most ``shard_mb`` megabytes,
rows in index order, plus a ``manifest.json`` with every shard's image count and SHA-256 and the
training part's per-channel pixel statistics. It reads the dataset's images one block at a time,
so writing the shards never holds a whole part in memory; training then either loads the shards
(the parts fit its memory budget) or streams them (they do not).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgpipe.data.dataset import ROWS_PER_BLOCK, image_blocks, load_labels, write_npy_member
from imgpipe.artifacts.files import atomic_path, load_json, save_json

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    """One shard file of a part and how many images it holds."""

    path: Path
    images: int
    sha256: str


@dataclass(frozen=True)
class ShardedPart:
    """One part (train or val) as shards, with what a model needs to know about it."""

    shards: tuple[Shard, ...]
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def images(self) -> int:
        """Images in the part."""
        return sum(shard.images for shard in self.shards)

    @property
    def image_bytes(self) -> int:
        """Bytes of one uint8 image."""
        return math.prod(self.image_shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the part's images held in memory at once."""
        return self.images * self.image_bytes

    def digest(self) -> str:
        """A checksum of the part's content, from the shards' recorded SHA-256s."""
        return hashlib.sha256(" ".join(shard.sha256 for shard in self.shards).encode()).hexdigest()

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label of the part, in row order."""
        arrays = [read_shard(shard.path) for shard in self.shards]
        return np.concatenate([images for images, _ in arrays]), np.concatenate([labels for _, labels in arrays])


def read_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one shard file."""
    with np.load(path) as shard:
        return shard["images"], shard["labels"]


def rows_per_shard(image_shape: tuple[int, ...], shard_mb: float) -> int:
    """How many images of this shape fit in one shard of ``shard_mb`` megabytes (at least one)."""
    return max(1, int(shard_mb * 2**20) // math.prod(image_shape))


def channel_sums(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel sums of pixels and of squared pixels (integers, so shards add up exactly)."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.int64)
    return pixels.sum(axis=0), (pixels * pixels).sum(axis=0)


def statistics_from_sums(count: int, sums: np.ndarray, squares: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation from exact sums over ``count`` pixels per channel."""
    means = [int(total) / count for total in sums]
    variances = [(count * int(square) - int(total) ** 2) / count**2 for total, square in zip(sums, squares)]
    stds = [math.sqrt(variance) if variance > 0 else 1.0 for variance in variances]
    return means, stds


def write_shards(dataset_path: Path, parts: dict[str, np.ndarray], shard_mb: float, folder: Path) -> dict[str, Any]:
    """Write each part's rows of the dataset (sorted row indices) as shards under ``folder``, with the manifest.

    One pass over the dataset's images, a block at a time, so memory stays near one shard per part
    whatever the dataset's size. The folder is written beside its final place and swapped in at the
    end: a failure leaves the previous shards (or none), never a mix.
    """
    dataset = load_labels(dataset_path)
    labels, class_names = dataset.labels, dataset.class_names
    part_of_row = np.full(len(labels), -1)
    for number, rows in enumerate(parts.values()):
        part_of_row[rows] = number
    with atomic_path(folder) as partial:
        partial.mkdir(parents=True)
        manifest = _write_parts(dataset_path, labels, class_names, part_of_row, list(parts), shard_mb, partial)
    return manifest


def _write_parts(dataset_path: Path, labels: np.ndarray, class_names: tuple[str, ...], part_of_row: np.ndarray,
                 parts: list[str], shard_mb: float, folder: Path) -> dict[str, Any]:
    """Stream the dataset block by block into each part's shards under ``folder``; return the manifest."""
    writers: list[_PartWriter] | None = None
    start = 0
    for block in image_blocks(dataset_path, ROWS_PER_BLOCK):
        if writers is None:
            per_shard = rows_per_shard(block.shape[1:], shard_mb)
            writers = [_PartWriter(part, per_shard, folder) for part in parts]
        owners = part_of_row[start:start + len(block)]
        for number, writer in enumerate(writers):
            writer.add(block[owners == number], labels[start:start + len(block)][owners == number])
        start += len(block)
    manifest: dict[str, Any] = {"image_shape": list(block.shape[1:]), "class_names": list(class_names),
                                "images_per_shard": per_shard, "parts": {w.part: w.finish() for w in writers}}
    save_json(manifest, folder / MANIFEST)
    return manifest


class _PartWriter:
    """Collects one part's rows and writes a shard each time ``per_shard`` of them are in hand."""

    def __init__(self, part: str, per_shard: int, folder: Path) -> None:
        self.part, self.per_shard, self.folder = part, per_shard, folder
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.pending = 0
        self.shards: list[dict[str, Any]] = []
        self.sums: np.ndarray | int = 0
        self.squares: np.ndarray | int = 0
        self.pixels_per_channel = 0

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Take these rows (in row order), writing full shards as they fill."""
        self.images.append(images)
        self.labels.append(labels)
        self.pending += len(labels)
        while self.pending >= self.per_shard:
            self._write(self.per_shard)

    def finish(self) -> dict[str, Any]:
        """Write the last, partial shard; return the part's manifest entry."""
        if self.pending:
            self._write(self.pending)
        mean, std = statistics_from_sums(self.pixels_per_channel, self.sums, self.squares)
        return {"images": sum(shard["images"] for shard in self.shards), "shards": self.shards,
                "pixel_mean": mean, "pixel_std": std}

    def _write(self, count: int) -> None:
        images, labels = np.concatenate(self.images), np.concatenate(self.labels)
        self.images, self.labels, self.pending = [images[count:]], [labels[count:]], len(labels) - count
        images, labels = images[:count], labels[:count]
        sums, squares = channel_sums(images)
        self.sums, self.squares = self.sums + sums, self.squares + squares
        self.pixels_per_channel += images.size // images.shape[-1]
        path = self.folder / f"{self.part}-{len(self.shards):05d}.npz"
        with zipfile.ZipFile(path, "w") as archive:       # fixed timestamps: the same rows give the same bytes
            write_npy_member(archive, "images", images, compress=False)
            write_npy_member(archive, "labels", labels, compress=False)
        with open(path, "rb") as written:
            sha256 = hashlib.file_digest(written, "sha256").hexdigest()
        self.shards.append({"file": path.name, "images": count, "sha256": sha256})


def open_part(folder: Path, part: str) -> ShardedPart:
    """One part of the shards the split stage wrote, from the manifest (no image is read)."""
    manifest = load_json(folder / MANIFEST)
    entry = manifest["parts"][part]
    shards = tuple(Shard(folder / shard["file"], shard["images"], shard["sha256"]) for shard in entry["shards"])
    return ShardedPart(shards, tuple(manifest["image_shape"]), tuple(manifest["class_names"]))


def training_statistics(folder: Path) -> tuple[list[float], list[float]]:
    """Per-channel pixel mean and standard deviation of the training part, as the manifest records them."""
    entry = load_json(folder / MANIFEST)["parts"]["train"]
    return entry["pixel_mean"], entry["pixel_std"]
