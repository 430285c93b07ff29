"""Atomic writes, and the JSON files the stages share.

Every artifact is written to a temporary sibling and renamed into place in one step, so a
reader (or a rerun after a kill) sees the previous artifact or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def partial_path(target: Path) -> Path:
    """The temporary sibling of ``target``: ``name.partial.suffixes`` (writers such as Keras check the suffix)."""
    stem, dot, suffixes = target.name.partition(".")
    return target.with_name(f"{stem}.partial{dot}{suffixes}")


def remove_path(path: Path) -> None:
    """Delete a file, a link or a folder with its contents (nothing when it does not exist)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` (a file or a folder) to; it replaces ``target`` when the block
    succeeds and is removed when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    remove_path(partial)
    try:
        yield partial
        if partial.is_dir():
            remove_path(target)             # a folder cannot be renamed over a non-empty one
        partial.replace(target)
    except BaseException:
        remove_path(partial)
        raise


def save_text(text: str, path: Path) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")


def save_json(payload: Any, path: Path) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically."""
    save_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", path)


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())


# Where the stages write, and the names of what an interrupted writer leaves: `<name>.partial`,
# `<name>.partial.<ext>` (atomic writes), `.decoded-*` (the preprocess stage's scratch folder) and
# `<stage>.failed.ipynb` (the executed notebook of a failed stage, kept for inspection until the next run).
OUTPUT_FOLDERS = ("data/processed", "data/split", "data/predictions", "models", "exported", "reports", "metrics",
                  "evaluation", "dvclive", "fingerprints")
LEFTOVER_PATTERNS = ("*.partial", "*.partial.*", ".decoded-*", "*.failed.ipynb")


def remove_leftovers(root: Path, folders: tuple[str, ...] = OUTPUT_FOLDERS, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Delete scratch and partial files that a killed or failed stage left under ``root`` (except ``keep``);
    return them."""
    found = sorted({path for folder in folders if (root / folder).is_dir()
                    for pattern in LEFTOVER_PATTERNS for path in (root / folder).rglob(pattern)} - set(keep))
    removed = []
    for path in found:
        if not path.exists() and not path.is_symlink():
            continue              # inside a folder removed just before
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
