"""Where raw images come from: MNIST-format IDX files, class folders, or a CSV manifest.

A source only lists what is there (files and labels); decoding and cleaning come later.
Problems that make the whole source unusable raise :class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
import os
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


Allowed = tuple[Path, ...]


def outside_problem(path: Path, allowed: Allowed) -> str:
    """Why ``path`` may not be read (it resolves outside every folder of ``allowed``, e.g. through ``..``,
    an absolute path or a symbolic link), or "" when it lies inside one."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as error:      # a symlink loop, an unreadable parent
        return f"cannot be resolved ({type(error).__name__}: {error})"
    if any(resolved.is_relative_to(folder.resolve()) for folder in allowed):
        return ""
    how = "is a symbolic link to" if path.is_symlink() or resolved != path.absolute() else "lies at"
    return f"{how} {resolved}, outside {allowed[0]} (the folder data.dvc tracks); it is not read"


def _outside_entry(path: Path, label: str, problem: str) -> dict[str, str]:
    return {"file": str(path), "label": label, "reason": "outside_raw_data", "detail": problem}


def find_idx_file(raw_dir: Path, stem: str, allowed: Allowed = ()) -> Path:
    """The IDX file ``stem`` in ``raw_dir``, gzip-compressed or plain (refused when it resolves outside
    ``allowed``)."""
    _require_folder(raw_dir, "the folder of the four MNIST-format files")
    for name in (f"{stem}.gz", stem):
        if (raw_dir / name).is_file():
            if allowed and (problem := outside_problem(raw_dir / name, allowed)):
                raise DataError(f"{raw_dir / name}: {problem}; copy the file into data/raw instead of linking it.")
            return raw_dir / name
    raise DataError(f"{raw_dir}: no {stem}.gz or {stem}; an idx source needs the four MNIST-format files "
                    f"{', '.join(name for pair in IDX_FILES.values() for name in pair)} (optionally .gz).")


def _require_folder(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{root}: folder missing (it does not exist); expected {what}.")
    if not root.is_dir():
        raise DataError(f"{root}: is a file; expected {what}.")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _hidden_entry(path: Path, label: str) -> dict[str, str]:
    return {"file": str(path), "label": label, "reason": "hidden_file",
            "detail": "hidden files and folders (a name starting with '.', e.g. .DS_Store) are skipped"}


def _walk_class_folder(class_dir: Path, root: Path, allowed: Allowed) -> tuple[list[Path], list[dict[str, str]]]:
    """Regular files under ``class_dir`` (symbolic links to folders are not followed), and those passed over:
    hidden ones, and links that resolve outside ``allowed``."""
    files: list[Path] = []
    passed_over: list[dict[str, str]] = []
    for folder, subfolders, names in os.walk(class_dir):
        here = Path(folder)
        for name in sorted(subfolders):
            if (here / name).is_symlink():
                problem = outside_problem(here / name, allowed)
                passed_over.append(_outside_entry(here / name, class_dir.name, problem) if problem else
                                   {"file": str(here / name), "label": class_dir.name,
                                    "reason": "outside_class_folder",
                                    "detail": "a symbolic link to a folder; links to folders are not followed"})
        subfolders[:] = sorted(name for name in subfolders if not (here / name).is_symlink())
        for name in sorted(names):
            path = here / name
            if _is_hidden(path, root):
                passed_over.append(_hidden_entry(path, class_dir.name))
            elif problem := outside_problem(path, allowed):
                passed_over.append(_outside_entry(path, class_dir.name, problem))
            elif not path.is_file():
                passed_over.append({"file": str(path), "label": class_dir.name, "reason": "unreadable",
                                    "detail": "not a regular file (a FIFO, socket, device or broken link)"})
            else:
                files.append(path)
    return sorted(files), passed_over


def list_class_folders(root: Path, allowed: Allowed = ()) -> ImageFiles:
    """One sub-folder per class (nested folders allowed), class names from folder names, sorted.

    Nothing that resolves outside ``allowed`` (default: ``root``) is listed: symbolic links that leave it
    are passed over with the reason ``outside_raw_data``, hidden files with ``hidden_file``.
    """
    _require_folder(root, "a folder with one sub-folder per class")
    allowed = allowed or (root,)
    if problem := outside_problem(root, allowed):
        raise DataError(f"{root}: {problem}; the class folders must lie under data/raw.")
    children = sorted(root.iterdir())
    passed_over = [_hidden_entry(child, "") for child in children if child.name.startswith(".")]
    passed_over += [_outside_entry(child, child.name, problem) for child in children
                    if not child.name.startswith(".") and child.is_dir()
                    and (problem := outside_problem(child, allowed))]
    class_dirs = [child for child in children if child.is_dir() and not child.name.startswith(".")
                  and not outside_problem(child, allowed)]
    if not class_dirs:
        raise DataError(f"{root}: holds no class folders; expected one sub-folder per class, each with its images.")
    files: list[Path] = []
    labels: list[int] = []
    passed_over += [{"file": str(path), "label": "", "reason": "outside_class_folder",
                     "detail": "files directly under the root belong to no class"}
                    for path in children if path.is_file() and not path.name.startswith(".")]
    for label, class_dir in enumerate(class_dirs):
        found, skipped = _walk_class_folder(class_dir, root, allowed)
        passed_over += skipped
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


def _manifest_rows(manifest: Path) -> list[dict[str, str]]:
    """The rows of a UTF-8 CSV (a byte-order mark is allowed); other encodings are named in the error."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except UnicodeDecodeError as error:
        line = manifest.read_bytes()[:error.start].count(b"\n") + 1
        raise DataError(f"{manifest}, line {line}: byte 0x{error.object[error.start]:02x} is not UTF-8 "
                        "(the file looks like Latin-1 / Windows-1252 or another legacy encoding); "
                        "save the manifest as UTF-8.") from None


def read_manifest(manifest: Path, allowed: Allowed = ()) -> ImageFiles:
    """A CSV with a header and the columns ``path`` (relative to the CSV's folder) and ``label``.

    Rows whose path is absolute, climbs out with ``..`` or resolves through a symbolic link outside
    ``allowed`` (default: the CSV's folder) are passed over with the reason ``outside_raw_data``, unread.
    """
    allowed = allowed or (manifest.parent,)
    if problem := outside_problem(manifest, allowed):
        raise DataError(f"{manifest}: the manifest itself {problem}; keep it under data/raw.")
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found; expected a CSV file with the columns path,label.")
    rows = _manifest_rows(manifest)
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
        listed = Path(row["path"].strip())
        path = manifest.parent / listed
        if listed.is_absolute() or ".." in listed.parts:
            passed_over.append(_outside_entry(listed, row["label"].strip(), "an absolute path or one with '..' "
                                              f"in {manifest.name}; paths must be relative and stay under "
                                              f"{allowed[0]}; it is not read"))
        elif problem := outside_problem(path, allowed):
            passed_over.append(_outside_entry(path, row["label"].strip(), problem))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            passed_over.append({"file": str(path), "label": row["label"].strip(), "reason": "unsupported_extension",
                                "detail": f"extension {path.suffix or '(none)'!r} is not an image format"})
        elif not path.is_file():
            passed_over.append({"file": str(path), "label": row["label"].strip(), "reason": "missing_file",
                                "detail": f"listed in {manifest.name} but not found"})
        else:
            files.append(path)
            labels.append(index[row["label"].strip()])
    return ImageFiles(files, np.asarray(labels, dtype=np.int64), class_names, passed_over)
