"""A stage that fails leaves the previous run's outputs as they were.

DVC keeps a stage's outputs when it reruns it (every output in ``dvc.yaml`` is ``persist: true``), so
nothing is deleted before ``imgpipe run`` starts: a bad parameter or a missing environment changes no
file. Once the stage runs, its writers replace files one by one (a model, then its metrics, its
curves, …). :class:`OutputBackup` copies the stage's declared outputs aside before the kernel starts
and puts them back if the stage fails or is stopped, so the workspace never mixes a failed run's files
with the outputs ``dvc.lock`` records. A backup still there when a stage starts belongs to a run that
was killed outright (SIGKILL): it is restored first.

Restoring may itself be interrupted (a second signal, a stop arriving while a failure is being cleaned
up) and run again: it only replaces an output whose copy is still in the backup, and removes only the
outputs the backup lists as absent, so a second restore never deletes what the first one put back.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from imgpipe.artifacts.files import remove_path

LOGGER = logging.getLogger(__name__)
BACKUP_ROOT = Path(".dvc") / "tmp" / "imgpipe-outputs"
# Outputs that must survive a failure as they are: the per-epoch training backup a resumed run needs.
NOT_RESTORED = ("checkpoints/",)
# In the backup folder: the outputs that did not exist when it was made (a restore removes them).
ABSENT_LIST = ".absent-outputs.json"


def stage_outputs(root: Path, stage: str, model_name: str | None) -> list[Path]:
    """The outputs and metrics ``dvc.yaml`` declares for ``stage`` (``${item}`` filled with the model)."""
    definition = yaml.safe_load((root / "dvc.yaml").read_text())["stages"].get(stage, {})
    definition = definition.get("do", definition)
    declared = [next(iter(entry)) if isinstance(entry, dict) else entry
                for key in ("outs", "metrics", "plots") for entry in definition.get(key, [])]
    names = [name.replace("${item}", model_name or "") for name in declared]
    return [root / name for name in names if not name.startswith(NOT_RESTORED)]


class OutputBackup:
    """Copies of a stage's outputs, restored after a failure and dropped after a success."""

    def __init__(self, root: Path, stage: str, model_name: str | None) -> None:
        self.root = root
        self.outputs = stage_outputs(root, stage, model_name)
        self.folder = root / BACKUP_ROOT / (f"{stage}-{model_name}" if model_name else stage)

    def _copy(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)

    def _relative(self, output: Path) -> str:
        return output.relative_to(self.root).as_posix()

    def save(self) -> None:
        """Restore what a killed run left behind, then copy the current outputs aside."""
        if self.folder.exists():
            LOGGER.info("an earlier run of this stage was killed: restoring its previous outputs first")
            self.restore()
        partial = self.folder.with_name(self.folder.name + ".partial")
        for stale in (partial, self._dropped()):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            absent: list[str] = []
            for output in self.outputs:
                if output.exists() or output.is_symlink():
                    self._copy(output, partial / self._relative(output))
                else:
                    absent.append(self._relative(output))
            (partial / ABSENT_LIST).write_text(json.dumps(absent))
            partial.replace(self.folder)
        except BaseException:          # e.g. a full disk: no half copy is left, nothing else was touched
                                       # (one cut short by a stop is removed by the next save)
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def restore(self) -> None:
        """Put every output back as it was when :meth:`save` ran (outputs it did not find are removed).

        Safe to run again after an interruption: see :meth:`restore_output`."""
        if not self.folder.is_dir():
            return
        for output in self.outputs:
            self.restore_output(output)
        self._discard()

    def restore_output(self, output: Path) -> None:
        """Put one output back: its kept copy replaces it, or it is removed if the backup lists it absent.

        An output whose copy is gone and which is not listed absent was put back by an earlier restore
        that was interrupted: it is left alone. (A backup without the list, made by an older imgpipe,
        counts every output without a copy as absent.)"""
        kept = self.folder / self._relative(output)
        if kept.exists() or kept.is_symlink():
            remove_path(output)
            output.parent.mkdir(parents=True, exist_ok=True)
            kept.replace(output)
        elif (absent := self._absent()) is None or self._relative(output) in absent:
            remove_path(output)

    def _absent(self) -> set[str] | None:
        """The outputs the backup lists as absent when it was made (None for a backup without the list)."""
        listing = self.folder / ABSENT_LIST
        return set(json.loads(listing.read_text())) if listing.is_file() else None

    def _dropped(self) -> Path:
        return self.folder.with_name(self.folder.name + ".dropped")

    def drop(self) -> None:
        """The stage succeeded: its new outputs stay."""
        self._discard()

    def _discard(self) -> None:
        """Delete the backup, renamed away in one step first: a stop meanwhile finds all of it or none."""
        if self.folder.is_dir():
            self.folder.replace(self._dropped())
        shutil.rmtree(self._dropped(), ignore_errors=True)
