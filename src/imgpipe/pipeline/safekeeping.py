"""A stage that fails leaves the previous run's outputs as they were.

DVC keeps a stage's outputs when it reruns it (every output in ``dvc.yaml`` is ``persist: true``), so
nothing is deleted before ``imgpipe run`` starts: a bad parameter or a missing environment changes no
file. Once the stage runs, its writers replace files one by one (a model, then its metrics, its
curves, …). :class:`OutputBackup` copies the stage's declared outputs aside before the kernel starts
and puts them back if the stage fails or is stopped, so the workspace never mixes a failed run's files
with the outputs ``dvc.lock`` records. A backup still there when a stage starts belongs to a run that
was killed outright (SIGKILL): it is restored first.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

LOGGER = logging.getLogger(__name__)
BACKUP_ROOT = Path(".dvc") / "tmp" / "imgpipe-outputs"
# Outputs that must survive a failure as they are: the per-epoch training backup a resumed run needs.
NOT_RESTORED = ("checkpoints/",)


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

    def save(self) -> None:
        """Restore what a killed run left behind, then copy the current outputs aside."""
        if self.folder.exists():
            LOGGER.info("an earlier run of this stage was killed: restoring its previous outputs first")
            self.restore()
        partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            for output in self.outputs:
                if output.exists() or output.is_symlink():
                    self._copy(output, partial / output.relative_to(self.root))
            partial.mkdir(parents=True, exist_ok=True)
            partial.replace(self.folder)
        except BaseException:          # e.g. a full disk: no half copy is left, nothing else was touched
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def restore(self) -> None:
        """Put every output back as it was when :meth:`save` ran (outputs it did not find are removed)."""
        if not self.folder.is_dir():
            return
        for output in self.outputs:
            kept = self.folder / output.relative_to(self.root)
            if output.is_dir() and not output.is_symlink():
                shutil.rmtree(output)
            elif output.exists() or output.is_symlink():
                output.unlink()
            if kept.exists() or kept.is_symlink():
                output.parent.mkdir(parents=True, exist_ok=True)
                kept.replace(output)
        shutil.rmtree(self.folder, ignore_errors=True)

    def drop(self) -> None:
        """The stage succeeded: its new outputs stay."""
        shutil.rmtree(self.folder, ignore_errors=True)
