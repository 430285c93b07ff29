"""Keep stage notebooks free of outputs, so saving one in JupyterLab does not change its hash.

DVC hashes each stage's notebook; a copy saved with outputs, execution counts or editor
metadata would look like a code change and rerun the stage. The JupyterLab pre-save hook
in ``.jupyter/jupyter_server_config.py`` passes every saved notebook through
:func:`strip_notebook`, so the file on disk changes only when its code or text does.
"""

from __future__ import annotations

from typing import Any

KEPT_CELL_METADATA = ("tags",)
NOTEBOOK_METADATA: dict[str, Any] = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def strip_notebook(notebook: dict[str, Any]) -> dict[str, Any]:
    """Remove outputs, execution counts and editor metadata from a notebook dict, in place."""
    for cell in notebook.get("cells", []):
        cell["metadata"] = {key: value for key, value in cell.get("metadata", {}).items()
                            if key in KEPT_CELL_METADATA}
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
        if not cell.get("attachments"):
            cell.pop("attachments", None)
    notebook["metadata"] = {key: dict(value) for key, value in NOTEBOOK_METADATA.items()}
    return notebook


PUBLISHED = "reports/"      # the pipeline's executed notebooks: DVC outputs, not for editing


def strip_before_save(model: dict[str, Any], path: str = "", **_: Any) -> None:
    """Jupyter server ``pre_save_hook``: strip every notebook before it is written; refuse to overwrite
    an executed notebook under ``reports/`` (a DVC output) and say where to save instead."""
    if path.lstrip("/").startswith(PUBLISHED):
        raise PermissionError(f"{path} is an executed notebook the pipeline published (a DVC output); it is "
                              "not saved. Use File → Save Notebook As… under scratch/ to keep your changes.")
    if model.get("type") == "notebook" and isinstance(model.get("content"), dict):
        strip_notebook(model["content"])
