"""Every path the project reads or writes, defined in one place.

Paths are resolved from the project root, found by walking up from the current
directory to the folder holding ``dvc.yaml`` (or taken from ``IMGPIPE_ROOT``), so
they work the same from ``dvc repro`` (repository root), Papermill (the kernel's
cwd) and JupyterLab (the ``notebooks/`` folder).

A notebook run by hand (a Jupyter kernel that ``imgpipe run`` did not start, so
``IMGPIPE_STAGE`` is unset) writes its outputs under ``scratch/``, a mirror of the
project's folders: each output path points into ``scratch/``, seeded with a copy of the
pipeline's file when that is newer, so exploring reads the pipeline's results but never
overwrites what DVC tracks.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT_MARKER = "dvc.yaml"
STAGE_ENV = "IMGPIPE_STAGE"         # set by `imgpipe run` for the kernel: write the real outputs
SCRATCH = "scratch"


def find_project_root(start: Path | None = None) -> Path:
    """Return the nearest folder at or above ``start`` that holds ``dvc.yaml``."""
    override = os.environ.get("IMGPIPE_ROOT")
    if override:
        return Path(override).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ROOT_MARKER).is_file():
            return folder
    raise FileNotFoundError(
        f"No {ROOT_MARKER} found in {here} or any parent folder; run from inside the "
        "imgpipe project or set IMGPIPE_ROOT to its root."
    )


def exploring() -> bool:
    """Whether this is a Jupyter kernel that ``imgpipe run`` did not start (a notebook run by hand)."""
    return "ipykernel" in sys.modules and not os.environ.get(STAGE_ENV)


def _newest_mtime(path: Path) -> float:
    if path.is_dir():
        return max((item.stat().st_mtime for item in path.rglob("*")), default=path.stat().st_mtime)
    return path.stat().st_mtime


def _mirror(source: Path, mirror: Path) -> None:
    """Copy ``source`` (file or folder) to ``mirror`` when the mirror is missing or older."""
    if not source.exists() or (mirror.exists() and _newest_mtime(mirror) >= _newest_mtime(source)):
        return
    if mirror.is_dir():
        shutil.rmtree(mirror)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, mirror)
    else:
        shutil.copy2(source, mirror)


@dataclass(frozen=True)
class ProjectPaths:
    """All project locations relative to one root; outputs under ``scratch`` when that is set."""

    root: Path
    scratch: Path | None = None

    def _output(self, relative: str) -> Path:
        """Where an output lives: in the project, or in the scratch mirror (seeded from the project)."""
        real = self.root / relative
        if self.scratch is None:
            return real
        mirror = self.scratch / relative
        _mirror(real, mirror)
        mirror.parent.mkdir(parents=True, exist_ok=True)
        return mirror

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def raw_data(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def dataset(self) -> Path:
        return self._output("data/processed/dataset.npz")

    @property
    def cleaning_report(self) -> Path:
        return self._output("data/processed/cleaning_report.json")

    @property
    def split_indices(self) -> Path:
        return self._output("data/split/indices.npz")

    @property
    def split_shards(self) -> Path:
        return self._output("data/split/shards")

    def model_file(self, model_name: str) -> Path:
        return self._output(f"models/{model_name}.keras")

    def training_log_dir(self, model_name: str) -> Path:
        return self._output(f"dvclive/train/{model_name}")

    def checkpoint_dir(self, model_name: str) -> Path:
        return self._output(f"checkpoints/{model_name}")

    def stage_metrics(self, stage: str) -> Path:
        return self._output(f"metrics/{stage}.json")

    def model_metrics(self, stage: str, model_name: str) -> Path:
        return self._output(f"metrics/{stage}/{model_name}.json")

    def fingerprint(self, stage: str, model_name: str) -> Path:
        return self._output(f"fingerprints/{stage}/{model_name}.json")

    def predictions(self, model_name: str) -> Path:
        return self._output(f"data/predictions/{model_name}.npy")

    def export_dir(self, model_name: str) -> Path:
        return self._output(f"exported/{model_name}")

    def evaluation_dir(self, model_name: str) -> Path:
        return self._output(f"evaluation/{model_name}")

    @property
    def reports(self) -> Path:
        """Executed notebooks and published pages (written by ``imgpipe run`` only)."""
        return self.root / "reports"

    @property
    def figures(self) -> Path:
        return self._output("reports/figures")


def project_paths(start: Path | None = None) -> ProjectPaths:
    """Locate the project root and return its paths (outputs under ``scratch/`` in a hand-run notebook)."""
    root = find_project_root(start)
    return ProjectPaths(root, root / SCRATCH if exploring() else None)
