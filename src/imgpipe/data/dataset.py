"""The cleaned dataset as the stages after preprocessing read it (light: no decoding code).

``dataset.npz`` holds ``images`` (N, H, W, C) uint8, ``labels``, ``origin`` and ``class_names``.
Readers that need only some rows stream the images member block by block, so they never hold
more than those rows and one block, whatever the dataset's size.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

ORIGIN_TRAIN, ORIGIN_TEST = 0, 1
ROWS_PER_BLOCK = 4096
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # archive members with this date: the same arrays give the same bytes


@dataclass(frozen=True)
class Labels:
    """Everything in the dataset but its images."""

    labels: np.ndarray
    origin: np.ndarray
    class_names: tuple[str, ...]


def load_labels(path: Path) -> Labels:
    """Read labels, origins and class names, leaving the images on disk."""
    with np.load(path) as archive:
        return Labels(archive["labels"], archive["origin"], _class_names(archive))


def _class_names(archive: np.lib.npyio.NpzFile) -> tuple[str, ...]:
    return tuple(str(name) for name in archive["class_names"])


def write_npy_member(archive: zipfile.ZipFile, name: str, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` as ``name.npy`` into a zip archive, with a fixed date so the bytes are reproducible."""
    info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with archive.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _read_images_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(stream)
    return shape, dtype


def image_bytes(path: Path) -> int:
    """Bytes of one image of the dataset (read from the archive's header, not its data)."""
    with zipfile.ZipFile(path) as archive, archive.open("images.npy") as stream:
        shape, dtype = _read_images_header(stream)
    return math.prod(shape[1:]) * dtype.itemsize


def image_blocks(path: Path, rows_per_block: int = ROWS_PER_BLOCK) -> Iterator[np.ndarray]:
    """The dataset's images in row order, ``rows_per_block`` at a time, decompressed as they are read."""
    with zipfile.ZipFile(path) as archive, archive.open("images.npy") as stream:
        shape, dtype = _read_images_header(stream)
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        for start in range(0, shape[0], rows_per_block):
            count = min(rows_per_block, shape[0] - start)
            yield np.frombuffer(stream.read(count * row_bytes), dtype=dtype).reshape(count, *shape[1:])


def load_rows(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of ``rows`` (sorted row indices), read in one pass over the images."""
    if np.any(np.diff(rows) <= 0):
        raise ValueError(f"{path}: load_rows needs sorted, distinct row indices")
    labels = load_labels(path).labels
    wanted = np.zeros(len(labels), dtype=bool)
    wanted[rows] = True
    picked, start = [], 0
    for block in image_blocks(path):
        picked.append(block[wanted[start:start + len(block)]])
        start += len(block)
    return np.concatenate(picked), labels[wanted]
