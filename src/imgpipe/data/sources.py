"""Where raw images come from: MNIST-format IDX files, class folders, or a CSV manifest.

A source only lists what is there (files and labels); decoding and cleaning come later.
Problems that make the whole source unusable raise :class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(ValueError):
    """Raw data that cannot be used as given; the message names the file and what was expected."""


@dataclass(frozen=True)
class ImageFiles:
    """Candidate image files with their labels, and the files passed over (with why)."""

    files: list[Path]
    labels: np.ndarray
    class_names: tuple[str, ...]
    passed_over: list[dict[str, str]] = field(default_factory=list)


def find_idx_file(raw_dir: Path, stem: str) -> Path:
    """The IDX file ``stem`` in ``raw_dir``, gzip-compressed or plain."""
    for name in (f"{stem}.gz", stem):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise DataError(f"{raw_dir}: no {stem}.gz or {stem}; an idx source needs the four MNIST-format files "
                    f"{', '.join(name for pair in IDX_FILES.values() for name in pair)} (optionally .gz).")


def _require_folder(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{root}: does not exist; expected {what}.")
    if not root.is_dir():
        raise DataError(f"{root}: is a file; expected {what}.")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_class_folders(root: Path) -> ImageFiles:
    """One sub-folder per class (nested folders allowed), class names from folder names, sorted."""
    _require_folder(root, "a folder with one sub-folder per class")
    class_dirs = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: holds no class folders; expected one sub-folder per class, each with its images.")
    files: list[Path] = []
    labels: list[int] = []
    passed_over = [{"file": str(path), "label": "", "reason": "outside_class_folder",
                    "detail": "files directly under the root belong to no class"}
                   for path in sorted(root.iterdir()) if path.is_file() and not path.name.startswith(".")]
    for label, class_dir in enumerate(class_dirs):
        found = sorted(path for path in class_dir.rglob("*") if path.is_file() and not _is_hidden(path, root))
        images = [path for path in found if path.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"{class_dir}: class folder '{class_dir.name}' holds no image files "
                            f"({len(found)} other files); expected {', '.join(sorted(IMAGE_EXTENSIONS))} files, "
                            "or remove the folder.")
        passed_over += [{"file": str(path), "label": class_dir.name, "reason": "unsupported_extension",
                         "detail": f"extension {path.suffix or '(none)'!r} is not an image format"}
                        for path in found if path.suffix.lower() not in IMAGE_EXTENSIONS]
        files += images
        labels += [label] * len(images)
    return ImageFiles(files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs), passed_over)


def read_manifest(manifest: Path) -> ImageFiles:
    """A CSV with a header and the columns ``path`` (relative to the CSV's folder) and ``label``."""
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found; expected a CSV file with the columns path,label.")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        columns = set(rows[0]) if rows else set()
    if not {"path", "label"} <= columns:
        raise DataError(f"{manifest}: columns {sorted(columns)}; expected a header with path and label "
                        f"and at least one row.")
    for line, row in enumerate(rows, start=2):
        if not (row["path"] or "").strip() or not (row["label"] or "").strip():
            raise DataError(f"{manifest}, line {line}: path {row['path']!r}, label {row['label']!r}; "
                            "expected both to be non-empty.")
    class_names = tuple(sorted({row["label"].strip() for row in rows}))
    index = {name: label for label, name in enumerate(class_names)}
    files, labels, passed_over = [], [], []
    for row in rows:
        path = manifest.parent / row["path"].strip()
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            passed_over.append({"file": str(path), "label": row["label"].strip(), "reason": "unsupported_extension",
                                "detail": f"extension {path.suffix or '(none)'!r} is not an image format"})
        elif not path.is_file():
            passed_over.append({"file": str(path), "label": row["label"].strip(), "reason": "missing_file",
                                "detail": f"listed in {manifest.name} but not found"})
        else:
            files.append(path)
            labels.append(index[row["label"].strip()])
    return ImageFiles(files, np.asarray(labels, dtype=np.int64), class_names, passed_over)
