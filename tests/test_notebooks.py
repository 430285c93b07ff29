"""Static checks of the stage notebooks against params.yaml and dvc.yaml.

- the `parameters` cell holds literals equal to params.yaml's defaults for that stage;
- notebooks in git carry no outputs and define no functions or classes;
- each stage in dvc.yaml depends on exactly the imgpipe modules its notebook imports.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
import yaml

from imgpipe.config.schema import load_params
from imgpipe.models.registry import family_names
from imgpipe.pipeline.dependencies import imgpipe_closure, imported_modules, notebook_code, stage_sources
from imgpipe.pipeline.hygiene import strip_notebook
from imgpipe.pipeline.stages import STAGES, Stage, stage

STAGE_NAMES = [entry.name for entry in STAGES]


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def parameters_cell(path: Path) -> dict[str, object]:
    tagged = [cell for cell in code_cells(path) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    values = {}
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.Assign), f"{path.name}: parameters cell holds only assignments"
        values[statement.targets[0].id] = ast.literal_eval(statement.value)   # raises unless a literal
    return values


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_parameters_cell_equals_params_yaml(project_root: Path, stage_name: str) -> None:
    entry = stage(stage_name)
    expected = entry.parameters(load_params(project_root / "params.yaml"), family_names()[0])
    assert parameters_cell(project_root / "notebooks" / entry.notebook) == expected


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_first_cell_turns_params_back_into_the_typed_object(project_root: Path, stage_name: str) -> None:
    entry = stage(stage_name)
    first = code_cells(project_root / "notebooks" / entry.notebook)[1].source
    assert f"params = validate_section({entry.schema.__name__}, params, 'params')" in first
    values = parameters_cell(project_root / "notebooks" / entry.notebook)["params"]
    assert entry.typed(values) == entry.section(load_params(project_root / "params.yaml"), family_names()[0])


def test_dvc_yaml_names_the_stages_of_the_table_in_order_and_every_family(project_root: Path) -> None:
    definition = yaml.safe_load((project_root / "dvc.yaml").read_text())
    assert list(definition["stages"]) == STAGE_NAMES
    assert definition["vars"][0]["models"] == list(family_names())
    numbered = sorted(path.name for path in (project_root / "notebooks").glob("[0-9]-*.ipynb"))
    assert numbered == [entry.notebook for entry in STAGES]


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_notebook_is_clean_narrative_over_src(project_root: Path, stage_name: str) -> None:
    notebook = project_root / "notebooks" / stage(stage_name).notebook
    for cell in code_cells(notebook):
        assert not cell.outputs and cell.execution_count is None, f"{notebook.name} is committed with outputs"
        defined = [node for node in ast.walk(ast.parse(cell.source))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, f"{notebook.name} defines code; move it into src/imgpipe"


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_committed_notebook_is_already_in_its_stripped_form(project_root: Path, stage_name: str) -> None:
    notebook = project_root / "notebooks" / stage(stage_name).notebook
    text = notebook.read_text()
    assert nbformat.writes(nbformat.from_dict(strip_notebook(json.loads(text)))) + "\n" == text


def test_strip_removes_outputs_counts_and_editor_metadata() -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_markdown_cell("x")])
    code = notebook.cells[0]
    code.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    code.execution_count = 3
    code.metadata = {"tags": ["parameters"], "scrolled": True, "execution": {"iopub.status.busy": "2026"}}
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    stripped = strip_notebook(json.loads(nbformat.writes(notebook)))
    assert stripped["cells"][0]["outputs"] == [] and stripped["cells"][0]["execution_count"] is None
    assert stripped["cells"][0]["metadata"] == {"tags": ["parameters"]}
    assert stripped["metadata"]["language_info"] == {"name": "python"}


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_stage_declares_exactly_the_modules_its_notebook_imports(project_root: Path, stage_name: str) -> None:
    entry = stage(stage_name)
    definition = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"][stage_name]
    deps = definition.get("do", definition)["deps"]
    declared = [dep for dep in deps if dep.startswith("notebooks/") or (dep.startswith("src/") and dep.endswith(".py"))]
    assert declared == stage_sources(entry, project_root)
    assert all((project_root / dep).exists() for dep in deps if dep.startswith("src/") and "${" not in dep)


def test_a_module_only_the_family_modules_import_is_a_dependency_of_every_per_model_stage(project_root: Path) -> None:
    # models/stem.py is imported by the rnn and attention modules alone, which are loaded by name, not by import.
    notebooks = "\n".join(notebook_code(project_root / "notebooks" / stage(name).notebook) for name in STAGE_NAMES)
    assert "imgpipe.models.stem" not in imgpipe_closure(imported_modules(notebooks, project_root / "src"),
                                                        project_root / "src")
    for name in STAGE_NAMES:
        sources = stage_sources(stage(name), project_root)
        assert ("src/imgpipe/models/stem.py" in sources) == stage(name).per_model, name
