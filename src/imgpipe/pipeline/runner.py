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

from imgpipe.artifacts.files import save_json, save_text
from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.config.schema import load_params
from imgpipe.pipeline.stages import Stage, stage

LOGGER = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parents[1] / "templates"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Errors about the user's data or params: their message says everything, a traceback would only bury it.
USER_ERRORS = frozenset({"CrossvalError", "DataError", "IdxFormatError", "ParamsError"})


class StageFailed(RuntimeError):
    """A cell of the stage notebook raised."""


def execute_stage(paths: ProjectPaths, stage_name: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path."""
    entry = stage(stage_name)
    parameters = entry.parameters(load_params(paths.params), model_name)
    parameters.update(overrides or {})
    source = paths.notebooks / entry.notebook
    executed = paths.reports / f"{entry.page(model_name)}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.info("executing %s → %s", source.name, executed.relative_to(paths.root))
    try:
        papermill.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=False, log_output=True)
    except PapermillExecutionError as error:
        traceback = "" if error.ename in USER_ERRORS else _ANSI.sub("", "\n".join(error.traceback)) + "\n"
        raise StageFailed(f"stage {entry.page(model_name)} failed in cell {error.exec_count} of "
                          f"{source}: {error.ename}: {error.evalue}\n{traceback}"
                          f"(the partly executed notebook is {executed})") from None
    return executed


def record_skipped(paths: ProjectPaths, entry: Stage, model_name: str, reason: str) -> None:
    """Write a per-model stage's metrics and page when params turn it off, without starting a kernel."""
    save_json({"enabled": False, "reason": reason}, paths.model_metrics(entry.name, model_name))
    save_text(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{entry.title}</title></head>"
              f"<body><h1>{entry.title}: skipped</h1><p>{html.escape(reason)}</p></body></html>\n",
              paths.reports / f"{entry.page(model_name)}.html")
    LOGGER.info("stage %s skipped: %s", entry.page(model_name), reason)


def publish_html(executed: Path, html_path: Path, hide_code: bool) -> None:
    """Convert an executed notebook to a self-contained HTML page (figures embedded)."""
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)], exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code, embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    save_text(body, html_path)


def run_stage(paths: ProjectPaths, stage_name: str, model_name: str | None = None) -> Path:
    """Execute a stage (or record why params skip it) and publish its page; return the page."""
    entry = stage(stage_name)
    reason = entry.skip_reason(load_params(paths.params), model_name)
    if reason:
        record_skipped(paths, entry, model_name, reason)
        return paths.reports / entry.html_name(model_name)
    executed = execute_stage(paths, stage_name, model_name)
    page = paths.reports / entry.html_name(model_name)
    publish_html(executed, page, hide_code=entry.is_report)
    LOGGER.info("published %s", page.relative_to(paths.root))
    return page
