"""Every path the project reads or writes, defined in one place.

Paths are resolved from the project root, found by walking up from the current
directory to the folder holding ``dvc.yaml`` (or taken from ``IMGPIPE_ROOT``), so
they work the same from ``dvc repro`` (repository root), Papermill (the kernel's
cwd) and JupyterLab (the ``notebooks/`` folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_MARKER = "dvc.yaml"


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


@dataclass(frozen=True)
class ProjectPaths:
    """All project locations relative to one root."""

    root: Path

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
        return self.root / "data" / "processed" / "dataset.npz"

    @property
    def cleaning_report(self) -> Path:
        return self.root / "data" / "processed" / "cleaning_report.json"

    @property
    def split_indices(self) -> Path:
        return self.root / "data" / "split" / "indices.npz"

    @property
    def split_shards(self) -> Path:
        return self.root / "data" / "split" / "shards"

    def model_file(self, model_name: str) -> Path:
        return self.root / "models" / f"{model_name}.keras"

    def training_log_dir(self, model_name: str) -> Path:
        return self.root / "dvclive" / "train" / model_name

    def checkpoint_dir(self, model_name: str) -> Path:
        return self.root / "checkpoints" / model_name

    def stage_metrics(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.json"

    def model_metrics(self, stage: str, model_name: str) -> Path:
        return self.root / "metrics" / stage / f"{model_name}.json"

    def fingerprint(self, stage: str, model_name: str) -> Path:
        return self.root / "fingerprints" / stage / f"{model_name}.json"

    def predictions(self, model_name: str) -> Path:
        return self.root / "data" / "predictions" / f"{model_name}.npy"

    def export_dir(self, model_name: str) -> Path:
        return self.root / "exported" / model_name

    def evaluation_dir(self, model_name: str) -> Path:
        return self.root / "evaluation" / model_name

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def figures(self) -> Path:
        return self.root / "reports" / "figures"


def project_paths(start: Path | None = None) -> ProjectPaths:
    """Locate the project root and return its paths."""
    return ProjectPaths(find_project_root(start))
