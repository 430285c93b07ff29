"""Rewrite each stage notebook's `parameters` cell from params.yaml's defaults (after a change of defaults).

Usage: python tools/sync_parameters_cells.py   (from the project root; tests/test_notebooks.py checks the result)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from imgpipe.config.schema import load_params
from imgpipe.pipeline.stages import STAGES, parameters_cell_source

LOGGER = logging.getLogger("sync_parameters_cells")


def sync(root: Path) -> list[str]:
    """Rewrite every stage notebook whose parameters cell differs; return the names of those changed."""
    params = load_params(root / "params.yaml")
    changed = []
    for entry in STAGES:
        path = root / "notebooks" / entry.notebook
        notebook = json.loads(path.read_text())
        cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
        source = parameters_cell_source(entry, params).splitlines(keepends=True)
        if cell["source"] != source:
            cell["source"] = source
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(path.stem)
    return changed


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOGGER.info("rewrote: %s", ", ".join(sync(Path.cwd())) or "nothing (every parameters cell is up to date)")
