"""tools/sync_parameters_cells.py: rewrites a notebook's parameters cell after a default changes, and only then."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import yaml

from tests.test_notebooks import parameters_cell


def _load_tool(project_root: Path):
    spec = importlib.util.spec_from_file_location("sync_parameters_cells",
                                                  project_root / "tools/sync_parameters_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_project(project_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(project_root / "notebooks", tmp_path / "notebooks")
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_committed_notebooks_need_no_rewrite(project_root: Path, tmp_path: Path) -> None:
    root = _copy_project(project_root, tmp_path)
    assert _load_tool(project_root).sync(root) == []
    for path in (root / "notebooks").glob("*.ipynb"):
        assert path.read_bytes() == (project_root / "notebooks" / path.name).read_bytes()


def test_a_changed_default_is_written_into_the_train_and_crossval_cells(project_root: Path, tmp_path: Path) -> None:
    root = _copy_project(project_root, tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["cnn"]["epochs"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _load_tool(project_root).sync(root) == ["3-train", "5-crossval"]
    assert parameters_cell(root / "notebooks/3-train.ipynb")["params"]["model"]["epochs"] == 7
    assert parameters_cell(root / "notebooks/5-crossval.ipynb")["params"]["train"]["model"]["epochs"] == 7
    assert parameters_cell(root / "notebooks/3-train.ipynb")["params"]["seed"] == params["train"]["seed"]
