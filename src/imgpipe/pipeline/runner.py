"""Execute a stage notebook with Papermill and publish it as HTML.

The executed copy goes to ``reports/`` (never in place), with exactly the stage's parameters from
``params.yaml``. A failing cell fails the stage and its cell number, error and traceback are logged to
the terminal. The kernel dies with this process, its log reaches the terminal at its own level, and a
failed or stopped stage leaves the previous outputs as they were.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from imgpipe.artifacts.files import partial_path, remove_leftovers, save_json, save_text
from imgpipe.artifacts.paths import STAGE_ENV, ProjectPaths
from imgpipe.config.schema import load_params
from imgpipe.models.registry import family_names
from imgpipe.pipeline.processes import default_stop_signals, die_with_parent, kill_tree, stop_on_signals
from imgpipe.pipeline.safekeeping import OutputBackup
from imgpipe.pipeline.stagelog import KernelLog
from imgpipe.pipeline.stages import STAGES, Stage, stage

LOGGER = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parents[1] / "templates"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Errors about the user's data or params: their message says everything, a traceback would only bury it.
USER_ERRORS = frozenset({"CrossvalError", "DataError", "IdxFormatError", "ParamsError", "ResourceError",
                         "ClusterConfigError", "DecodeWorkerDied"})


class StageFailed(RuntimeError):
    """A cell of the stage notebook raised."""


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


class QuietKernelManager(GuardedKernelManager):
    """The same kernel with its native stderr closed off. What TensorFlow's C++ writes there before its
    logging starts ignores TF_CPP_MIN_LOG_LEVEL and would reach the terminal; the cells' own output,
    stderr included, still reaches the executed notebook."""

    async def _async_start_kernel(self, **kw: Any) -> None:
        kw.setdefault("stderr", subprocess.DEVNULL)
        await super()._async_start_kernel(**kw)

    start_kernel = _async_start_kernel


def kernel_environment() -> None:
    """What the stage's kernel inherits: write the real outputs, and no TensorFlow C++ notes on stderr."""
    os.environ[STAGE_ENV] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _no_space(error: BaseException | str) -> bool:
    return getattr(error, "errno", None) == errno.ENOSPC or "[Errno 28]" in str(error)


def _no_space_message(paths: ProjectPaths, name: str, detail: str) -> str:
    return (f"stage {name} failed: the disk is full ({detail.strip()}); free space on the disk holding {paths.root} "
            "and rerun. Its partial files were removed; the previous outputs are untouched.")


def _failed(paths: ProjectPaths, name: str, partial: Path, message: str, keep_notebook: bool = False) -> StageFailed:
    """Remove what the failed stage left half-written (keeping its notebook for inspection when asked)."""
    kept = paths.reports / f"{name}.failed.ipynb"
    remove_leftovers(paths.root, keep=(partial,) if keep_notebook else ())
    if keep_notebook and partial.exists():
        partial.replace(kept)
        message += f"\n(the partly executed notebook is {kept.relative_to(paths.root)})"
    partial.unlink(missing_ok=True)
    return StageFailed(message)


def execute_stage(paths: ProjectPaths, stage_name: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None, kernel_level: int = logging.WARNING) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path.

    The notebook is executed into ``reports/<page>.partial.ipynb`` and renamed when every cell has run, so a
    failed or stopped stage never leaves a half-executed notebook under the published name. The kernel's log
    records reach this process's logging at their own level; those below ``kernel_level`` and the kernel's
    other output are dropped (they stay in the executed notebook).
    """
    entry = stage(stage_name)
    parameters = entry.parameters(load_params(paths.params), model_name)
    parameters.update(overrides or {})
    name = entry.page(model_name)
    source = paths.notebooks / entry.notebook
    executed = paths.reports / f"{name}.ipynb"
    partial = partial_path(executed)
    executed.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_leftovers(paths.root):
        LOGGER.info("removed %s, left by an interrupted or failed run", leftover.relative_to(paths.root))
    LOGGER.debug("executing %s → %s with %s", source.name, executed.relative_to(paths.root), parameters)
    kernel_environment()
    stdout, stderr = (KernelLog(name, kernel_level) for _ in range(2))
    manager = GuardedKernelManager if kernel_level <= logging.DEBUG else QuietKernelManager
    try:
        papermill.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(paths.root),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   stdout_file=stdout, stderr_file=stderr, kernel_manager_class=manager,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])   # no start-up notes
    except PapermillExecutionError as error:
        if error.ename == "OSError" and _no_space(error.evalue):
            raise _failed(paths, name, partial, _no_space_message(paths, name, error.evalue)) from None
        traceback = "" if error.ename in USER_ERRORS else _ANSI.sub("", "\n".join(error.traceback)) + "\n"
        raise _failed(paths, name, partial, f"stage {name} failed in cell {error.exec_count} of "
                                            f"notebooks/{entry.notebook}: {error.ename}: {error.evalue}\n"
                                            f"{traceback}".rstrip(), keep_notebook=True) from None
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
    finally:
        stdout.close()
        stderr.close()
    partial.replace(executed)
    return executed


def page_title(entry: Stage, model_name: str | None) -> str:
    """The browser tab's title of a published page."""
    if entry.is_report:
        return "imgpipe — study report"
    return f"imgpipe — {entry.title.lower()}" + (f" {model_name}" if model_name else "")


def navigation(model_names: tuple[str, ...] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Links to the report and every stage page, grouped as the pipeline runs (from the stage table)."""
    names = model_names or family_names()
    report = [entry for entry in STAGES if entry.is_report]
    shared = [(entry.name, entry.html_name()) for entry in STAGES if not entry.per_model and not entry.is_report]
    per_model = [(entry.name, [(name, entry.html_name(name)) for name in names]) for entry in STAGES if entry.per_model]
    return [("", [("Report", entry.html_name()) for entry in report]), ("data", shared), *per_model]


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
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code, embed_images=True)
    resources = {"metadata": {"name": title}, "imgpipe_nav": navigation(), "imgpipe_current": html_path.name}
    body, _ = exporter.from_notebook_node(notebook, resources=resources)
    save_text(body, html_path)


def record_skipped(paths: ProjectPaths, entry: Stage, model_name: str, reason: str) -> None:
    """Write a per-model stage's metrics and page when params turn it off, without starting a kernel.

    The metrics file is empty: a skipped stage has no figures for ``dvc metrics show``."""
    save_json({}, paths.model_metrics(entry.name, model_name))
    cell = nbformat.v4.new_markdown_cell(f"# {entry.title} of {model_name}: skipped\n\n{reason}", id="skipped")
    notebook = nbformat.v4.new_notebook(cells=[cell])      # a fixed cell id: the page is the same bytes on every run
    _export(notebook, paths.reports / entry.html_name(model_name), hide_code=True, title=page_title(entry, model_name))
    LOGGER.debug("stage %s skipped: %s", entry.page(model_name), reason)


def run_stage(paths: ProjectPaths, stage_name: str, model_name: str | None = None,
              kernel_level: int = logging.WARNING) -> Path:
    """Execute a stage (or record why params skip it) and publish its page; return the page.

    Params are validated before anything is touched. The stage's previous outputs are kept aside while it
    runs and put back when it fails or is stopped by a signal (which also stops its kernel and everything
    the kernel started), so a bad run never leaves fewer or newer files than the last good one.
    """
    entry = stage(stage_name)
    params = load_params(paths.params)                          # a bad parameter stops here
    entry.parameters(params, model_name)
    page = paths.reports / entry.html_name(model_name)
    reason = entry.skip_reason(params, model_name)
    if reason:
        record_skipped(paths, entry, model_name, reason)
        return page
    backup = OutputBackup(paths.root, stage_name, model_name)

    def clean_up() -> None:
        remove_leftovers(paths.root)
        backup.restore()

    stop_on_signals(clean_up, lambda: GuardedKernelManager.groups)
    backup.save()
    try:
        executed = execute_stage(paths, stage_name, model_name, kernel_level=kernel_level)
        publish_html(executed, page, hide_code=entry.is_report, title=page_title(entry, model_name))
    except BaseException:
        clean_up()
        LOGGER.info("the stage's previous outputs were restored")
        raise
    default_stop_signals()                    # the new outputs are complete: nothing to restore any more
    backup.drop()
    LOGGER.debug("published %s", page.relative_to(paths.root))
    return page
