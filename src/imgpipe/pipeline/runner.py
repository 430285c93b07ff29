"""Execute a stage notebook with Papermill and publish it as HTML.

The executed copy goes to ``reports/`` (never in place), with exactly the stage's
parameters from ``params.yaml``. A failing cell fails the stage and its cell number,
error and traceback are logged to the terminal.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import subprocess

import nbformat
import papermill
from jupyter_client import AsyncKernelManager
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from imgpipe import MODEL_NAMES
from imgpipe.pipeline.config import load_params, stage_parameters
from imgpipe.artifacts.files import save_json
from imgpipe.artifacts.paths import STAGE_ENV, ProjectPaths
from imgpipe.pipeline.stagelog import KernelLog

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


class QuietKernelManager(AsyncKernelManager):
    """Starts the kernel with its native stderr closed off. What TensorFlow's C++ writes there before
    its logging starts ignores TF_CPP_MIN_LOG_LEVEL and would reach the terminal; the cells' own
    output, stderr included, still reaches the executed notebook."""

    async def _async_start_kernel(self, **kw: Any) -> None:
        kw.setdefault("stderr", subprocess.DEVNULL)
        await super()._async_start_kernel(**kw)

    start_kernel = _async_start_kernel


def executed_name(stage: str, model_name: str | None) -> str:
    """File stem of the executed copy, e.g. ``train-cnn``."""
    return f"{stage}-{model_name}" if model_name else stage


def kernel_environment() -> None:
    """What the stage's kernel inherits: write the real outputs, and no TensorFlow C++ notes on stderr."""
    os.environ[STAGE_ENV] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def execute_stage(paths: ProjectPaths, stage: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None, kernel_level: int = logging.WARNING) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path.

    The kernel's log records reach this process's logging at their own level; those below
    ``kernel_level`` and the kernel's other output are dropped (they stay in the executed notebook).
    """
    if stage not in STAGE_NOTEBOOKS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NOTEBOOKS)}.")
    parameters = stage_parameters(load_params(paths.params), stage, model_name)
    parameters.update(overrides or {})
    source = paths.notebooks / STAGE_NOTEBOOKS[stage]
    executed = paths.reports / f"{executed_name(stage, model_name)}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.debug("executing %s → %s with %s", source.name, executed.relative_to(paths.root), parameters)
    kernel_environment()
    stdout, stderr = (KernelLog(executed_name(stage, model_name), kernel_level) for _ in range(2))
    try:
        papermill.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   stdout_file=stdout, stderr_file=stderr,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"],   # no start-up notes
                                   **({} if kernel_level <= logging.DEBUG else {"kernel_manager_class": QuietKernelManager}))
    except PapermillExecutionError as error:
        traceback = "" if error.ename in USER_ERRORS else _ANSI.sub("", "\n".join(error.traceback)) + "\n"
        raise StageFailed(f"stage {executed_name(stage, model_name)} failed in cell {error.exec_count} of "
                          f"{source}: {error.ename}: {error.evalue}\n{traceback}"
                          f"(the partly executed notebook is {executed})") from None
    finally:
        stdout.close()
        stderr.close()
    return executed


def record_skipped(paths: ProjectPaths, stage: str, model_name: str, reason: str) -> None:
    """Write a per-model stage's metrics and page when params turn it off, without starting a kernel.

    The metrics file is empty: a skipped stage has no figures for ``dvc metrics show``."""
    save_json({}, paths.model_metrics(stage, model_name))
    name = executed_name(stage, model_name)
    page = paths.reports / f"{name}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    cell = nbformat.v4.new_markdown_cell(f"# {stage} {model_name}: skipped\n\n{reason}", id="skipped")  # fixed id:
    notebook = nbformat.v4.new_notebook(cells=[cell])                   # the page is byte-identical on every run
    _export(notebook, page, hide_code=True, title=page_title(stage, model_name))
    LOGGER.debug("stage %s skipped: %s", name, reason)


def page_title(stage: str, model_name: str | None) -> str:
    """The browser tab's title of a published page."""
    if stage == "report":
        return "imgpipe — study report"
    return f"imgpipe — {stage}" + (f" {model_name}" if model_name else "")


def navigation(model_names: tuple[str, ...] = tuple(MODEL_NAMES)) -> list[tuple[str, list[tuple[str, str]]]]:
    """Links to the report and every stage page, grouped as the pipeline runs."""
    per_model = [(stage, [(name, f"{stage}-{name}.html") for name in model_names])
                 for stage in ("train", "evaluate", "crossval", "export")]
    return [("", [("Report", "index.html")]),
            ("data", [("preprocess", "preprocess.html"), ("split", "split.html")]), *per_model]


def publishable(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without stderr output (logs, library warnings): the executed .ipynb keeps them."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.get("outputs", [])
                            if not (output.output_type == "stream" and output.get("name") == "stderr")]
    return notebook


def publish_html(executed: Path, html_path: Path, hide_code: bool, title: str = "imgpipe") -> None:
    """Convert an executed notebook to a self-contained HTML page (figures embedded, no stderr)."""
    _export(publishable(nbformat.read(executed, as_version=4)), html_path, hide_code, title)


def _export(notebook: nbformat.NotebookNode, html_path: Path, hide_code: bool, title: str) -> None:
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)], exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code, embed_images=True)
    resources = {"metadata": {"name": title}, "imgpipe_nav": navigation(), "imgpipe_current": html_path.name}
    body, _ = exporter.from_notebook_node(notebook, resources=resources)
    partial = html_path.with_name(html_path.name + ".partial")
    partial.write_text(body, encoding="utf-8")
    partial.replace(html_path)
