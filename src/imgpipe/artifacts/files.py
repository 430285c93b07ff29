"""Small, atomic file writers shared by the stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_json(payload: Any, path: Path) -> None:
    """Write JSON with sorted keys and a trailing newline; readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def save_text(text: str, path: Path) -> None:
    """Write UTF-8 text atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())
