"""Execute a stage notebook with Papermill and publish it as HTML.

The executed copy goes to ``reports/`` (never in place), with exactly the stage's
parameters from ``params.yaml``. A failing cell fails the stage and its cell number,
error and traceback are logged to the terminal.
"""

from __future__ import annotations

import errno
import html
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from imgpipe.pipeline.config import load_params, stage_parameters
from imgpipe.artifacts.files import remove_leftovers, save_json
from imgpipe.pipeline.processes import die_with_parent, kill_tree
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
USER_ERRORS = frozenset({"DataError", "IdxFormatError", "ParamsError", "ResourceError", "ClusterConfigError",
                         "DecodeWorkerDied"})


class StageFailed(RuntimeError):
    """A cell of the stage notebook raised."""


def executed_name(stage: str, model_name: str | None) -> str:
    """File stem of the executed copy, e.g. ``train-cnn``."""
    return f"{stage}-{model_name}" if model_name else stage


class GuardedKernelManager(AsyncKernelManager):
    """A Jupyter kernel that dies with the process that started it (``PR_SET_PDEATHSIG``), and whose
    process group is remembered, so that stopping the stage stops the kernel and everything it started."""

    groups: ClassVar[list[int]] = []

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        command, options = await super()._async_pre_start_kernel(**kw)
        options["preexec_fn"] = die_with_parent
        return command, options

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        if getattr(self.provisioner, "pgid", None):
            GuardedKernelManager.groups.append(self.provisioner.pgid)


def _no_space(error: BaseException | str) -> bool:
    return getattr(error, "errno", None) == errno.ENOSPC or "[Errno 28]" in str(error)


def _failed(paths: ProjectPaths, name: str, partial: Path, message: str, keep_notebook: bool = False) -> StageFailed:
    """Remove what the failed stage left half-written (keeping its notebook for inspection when asked)."""
    kept = paths.reports / f"{name}.failed.ipynb"
    remove_leftovers(paths.root, keep=(partial,) if keep_notebook else ())
    if keep_notebook and partial.exists():
        partial.replace(kept)
        message += f"\n(the partly executed notebook is {kept})"
    partial.unlink(missing_ok=True)
    return StageFailed(message)


def execute_stage(paths: ProjectPaths, stage: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path.

    The notebook is executed into ``reports/<stage>.partial.ipynb`` and renamed when every cell has run,
    so a failed or stopped stage never leaves a half-executed notebook under the published name.
    """
    if stage not in STAGE_NOTEBOOKS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NOTEBOOKS)}.")
    parameters = stage_parameters(load_params(paths.params), stage, model_name)
    parameters.update(overrides or {})
    name = executed_name(stage, model_name)
    source = paths.notebooks / STAGE_NOTEBOOKS[stage]
    executed = paths.reports / f"{name}.ipynb"
    partial = paths.reports / f"{name}.partial.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_leftovers(paths.root):
        LOGGER.info("removed %s, left by an interrupted or failed run", leftover.relative_to(paths.root))
    LOGGER.info("executing %s → %s with %s", source.name, executed.relative_to(paths.root), parameters)
    try:
        papermill.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=False, log_output=True,
                                   kernel_manager_class=GuardedKernelManager)
    except PapermillExecutionError as error:
        if error.ename == "OSError" and _no_space(error.evalue):
            raise _failed(paths, name, partial, _no_space_message(paths, name, error.evalue)) from None
        traceback = "" if error.ename in USER_ERRORS else _ANSI.sub("", "\n".join(error.traceback)) + "\n"
        raise _failed(paths, name, partial, f"stage {name} failed in cell {error.exec_count} of {source}: "
                                            f"{error.ename}: {error.evalue}\n{traceback}".rstrip(),
                      keep_notebook=True) from None
    except DeadKernelError:
        kill_tree(GuardedKernelManager.groups, descendants_too=False)   # what the dead kernel started
        raise _failed(paths, name, partial, f"stage {name} failed: its Jupyter kernel died while running "
                                            f"{source.name} (killed by a signal — most often the out-of-memory "
                                            "killer: try a smaller batch_size or image_size — or crashed); "
                                            "nothing was written.") from None
    except OSError as error:
        if not _no_space(error):
            raise
        raise _failed(paths, name, partial, _no_space_message(paths, name, str(error))) from None
    partial.replace(executed)
    return executed


def _no_space_message(paths: ProjectPaths, name: str, detail: str) -> str:
    return (f"stage {name} failed: the disk is full ({detail.strip()}); free space on the disk holding {paths.root} "
            "and rerun. Its partial files were removed; the previous outputs are untouched.")


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
