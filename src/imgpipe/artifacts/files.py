"""Small, atomic file writers shared by the stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def save_json(payload: Any, path: Path) -> None:
    """Write JSON with sorted keys and a trailing newline; readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())


# Where the stages write, and the names of what an interrupted writer leaves: `<name>.partial`,
# `<name>.partial.<ext>` (atomic writes), `.decoded-*` (the preprocess stage's scratch folder) and
# `<stage>.failed.ipynb` (the executed notebook of a failed stage, kept for inspection until the next run).
OUTPUT_FOLDERS = ("data/processed", "data/split", "data/predictions", "models", "exported", "reports", "metrics",
                  "evaluation", "dvclive")
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
