"""Rewrite each stage notebook's `parameters` cell from params.yaml's defaults (after a change of defaults).

Usage: python tools/sync_parameters_cells.py   (from the project root; tests/test_notebooks.py checks the result)
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from imgpipe.pipeline.config import load_params, stage_parameters

LOGGER = logging.getLogger("sync_parameters_cells")
HEADER = "# Parameters: literals only, equal to params.yaml (Papermill injects the stage's values below).\n"
MODEL_STAGES = ("train", "evaluate", "crossval", "export")    # their notebooks default to the cnn


def parameters_source(values: dict[str, object], current: list[str]) -> list[str]:
    """The cell's lines: the header, then `name = literal` per parameter, keeping each line whose value is unchanged."""
    kept = {}
    for line in current:
        statement = ast.parse(line).body if line.strip() and not line.lstrip().startswith("#") else []
        if statement and isinstance(statement[0], ast.Assign):
            kept[statement[0].targets[0].id] = (ast.literal_eval(statement[0].value), line.rstrip("\n"))
    lines = [HEADER] + [(kept[name][1] if name in kept and kept[name][0] == value else f"{name} = {value!r}") + "\n"
                        for name, value in values.items()]
    lines[-1] = lines[-1].rstrip("\n")
    return lines


def sync(root: Path) -> list[str]:
    """Rewrite every notebook whose parameters cell differs; return the names of those changed."""
    params = load_params(root / "params.yaml")
    changed = []
    for path in sorted((root / "notebooks").glob("[0-9]-*.ipynb")):
        name = path.stem
        stage = name.split("-", 1)[1]
        model_name = "cnn" if stage in MODEL_STAGES else None
        notebook = json.loads(path.read_text())
        cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
        source = parameters_source(stage_parameters(params, stage, model_name), "".join(cell["source"]).splitlines())
        if cell["source"] != source:
            cell["source"] = source
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(name)
    return changed


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    LOGGER.info("rewrote: %s", ", ".join(sync(Path.cwd())) or "nothing (every parameters cell is up to date)")
