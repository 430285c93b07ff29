"""Execute a stage notebook with Papermill and publish it as HTML.

The executed copy goes to ``reports/`` (never in place), with exactly the stage's
parameters from ``params.yaml``. A failing cell fails the stage and its cell number,
error and traceback are logged to the terminal.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from imgpipe.pipeline.config import load_params, stage_parameters
from imgpipe.artifacts.files import save_json
from imgpipe.artifacts.paths import ProjectPaths

LOGGER = logging.getLogger(__name__)

STAGE_NOTEBOOKS: dict[str, str] = {
    "preprocess": "1-preprocess.ipynb",
    "split": "2-split.ipynb",
    "train": "3-train.ipynb",
    "evaluate": "4-evaluate.ipynb",
    "report": "5-report.ipynb",
    "crossval": "6-crossval.ipynb",
    "export": "7-export.ipynb",
}
TEMPLATES = Path(__file__).parents[1] / "templates"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Errors about the user's data or params: their message says everything, a traceback would only bury it.
USER_ERRORS = frozenset({"DataError", "IdxFormatError", "ParamsError"})


class StageFailed(RuntimeError):
    """A cell of the stage notebook raised."""


def executed_name(stage: str, model_name: str | None) -> str:
    """File stem of the executed copy, e.g. ``train-cnn``."""
    return f"{stage}-{model_name}" if model_name else stage


def execute_stage(paths: ProjectPaths, stage: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path."""
    if stage not in STAGE_NOTEBOOKS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NOTEBOOKS)}.")
    parameters = stage_parameters(load_params(paths.params), stage, model_name)
    parameters.update(overrides or {})
    source = paths.notebooks / STAGE_NOTEBOOKS[stage]
    executed = paths.reports / f"{executed_name(stage, model_name)}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.info("executing %s → %s with %s", source.name, executed.relative_to(paths.root), parameters)
    try:
        papermill.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=False, log_output=True)
    except PapermillExecutionError as error:
        traceback = "" if error.ename in USER_ERRORS else _ANSI.sub("", "\n".join(error.traceback)) + "\n"
        raise StageFailed(f"stage {executed_name(stage, model_name)} failed in cell {error.exec_count} of "
                          f"{source}: {error.ename}: {error.evalue}\n{traceback}"
                          f"(the partly executed notebook is {executed})") from None
    return executed


def record_skipped(paths: ProjectPaths, stage: str, model_name: str, reason: str) -> None:
    """Write a per-model stage's metrics and page when params turn it off, without starting a kernel."""
    save_json({"enabled": False, "reason": reason}, paths.model_metrics(stage, model_name))
    page = paths.reports / f"{executed_name(stage, model_name)}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{stage}</title></head>"
                    f"<body><h1>{stage}: skipped</h1><p>{html.escape(reason)}</p></body></html>\n", encoding="utf-8")
    LOGGER.info("stage %s skipped: %s", stage, reason)


def publish_html(executed: Path, html_path: Path, hide_code: bool) -> None:
    """Convert an executed notebook to a self-contained HTML page (figures embedded)."""
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)], exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code, embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    partial = html_path.with_name(html_path.name + ".partial")
    partial.write_text(body, encoding="utf-8")
    partial.replace(html_path)
