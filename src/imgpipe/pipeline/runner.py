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

from imgpipe.artifacts.files import partial_path, remove_leftovers, save_json, save_text
from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.config.schema import load_params
from imgpipe.pipeline.processes import die_with_parent, kill_tree, stop_on_signals
from imgpipe.pipeline.safekeeping import OutputBackup
from imgpipe.pipeline.stages import Stage, stage

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


def execute_stage(paths: ProjectPaths, stage_name: str, model_name: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Path:
    """Run one stage's notebook with its params; return the executed notebook's path.

    The notebook is executed into ``reports/<page>.partial.ipynb`` and renamed when every cell has run,
    so a failed or stopped stage never leaves a half-executed notebook under the published name.
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
    LOGGER.info("executing %s → %s", source.name, executed.relative_to(paths.root))
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
    """Execute a stage (or record why params skip it) and publish its page; return the page.

    Params are validated before anything is touched. The stage's previous outputs are kept aside while it
    runs and put back when it fails or is stopped by a signal (which also stops its kernel and everything
    the kernel started), so a bad run never leaves fewer or newer files than the last good one.
    """
    entry = stage(stage_name)
    params = load_params(paths.params)                          # a bad parameter stops here
    entry.parameters(params, model_name)
    reason = entry.skip_reason(params, model_name)
    if reason:
        record_skipped(paths, entry, model_name, reason)
        return paths.reports / entry.html_name(model_name)
    backup = OutputBackup(paths.root, stage_name, model_name)

    def clean_up() -> None:
        remove_leftovers(paths.root)
        backup.restore()

    stop_on_signals(clean_up, lambda: GuardedKernelManager.groups)
    backup.save()
    page = paths.reports / entry.html_name(model_name)
    try:
        executed = execute_stage(paths, stage_name, model_name)
        publish_html(executed, page, hide_code=entry.is_report)
    except BaseException:
        clean_up()
        LOGGER.info("the stage's previous outputs were restored")
        raise
    backup.drop()
    LOGGER.info("published %s", page.relative_to(paths.root))
    return page
