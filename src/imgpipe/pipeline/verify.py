"""``imgpipe verify``: rerun the committed study from scratch and compare it with what git records.

The committed revision is cloned into a temporary folder, given the verified raw data, and
reproduced with ``dvc repro``. Then every metrics file and the checksums ``dvc.lock`` records
for the deterministic outputs (dataset, split, predictions) are compared with the committed
ones. Wall times and speeds are measurements of the machine, not results, and are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

LOGGER = logging.getLogger(__name__)
MACHINE_MEASUREMENTS = ("wall_time_s", "images_per_second")
DETERMINISTIC_OUTPUTS = ("data/processed/*", "data/split/*", "data/predictions/*")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON → {"a.b.0": leaf}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def metric_differences(name: str, expected: Any, found: Any) -> list[str]:
    """One line per metric value that differs (machine measurements excluded)."""
    before, after = flatten(expected), flatten(found)
    lines = []
    for key in sorted(set(before) | set(after)):
        if key.split(".")[-1] in MACHINE_MEASUREMENTS:
            continue
        if before.get(key, "(absent)") != after.get(key, "(absent)"):
            lines.append(f"{name}: {key} was {before.get(key, '(absent)')!r}, now {after.get(key, '(absent)')!r}")
    return lines


def project_tools_environment() -> dict[str, str]:
    """This environment with the interpreter's bin folder first on PATH, so `dvc` and the stages'
    `imgpipe` are the project's own even when the virtual environment is not activated."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def locked_checksums(lock: dict[str, Any]) -> dict[str, str]:
    """{output path: md5} for the deterministic outputs recorded in a parsed dvc.lock."""
    checksums = {}
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if any(fnmatch(out["path"], pattern) for pattern in DETERMINISTIC_OUTPUTS):
                checksums[out["path"]] = out["md5"]
    return checksums


def lock_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """One line per deterministic output whose checksum differs between two dvc.lock files."""
    before, after = locked_checksums(expected), locked_checksums(found)
    return [f"dvc.lock: {path} had md5 {before.get(path)}, now {after.get(path)}"
            for path in sorted(set(before) | set(after)) if before.get(path) != after.get(path)]


def _committed(root: Path, path: str) -> str | None:
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=root, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def compare_with_commit(root: Path, rerun: Path) -> list[str]:
    """Every difference between the committed metrics and dvc.lock of ``root`` and those of ``rerun``."""
    listed = subprocess.run(["git", "ls-files", "metrics"], cwd=root, capture_output=True, text=True, check=True)
    differences = []
    for name in listed.stdout.split():
        found = rerun / name
        committed = _committed(root, name)
        if not found.is_file():
            differences.append(f"{name}: committed, but the rerun did not write it")
        elif committed is not None:
            differences += metric_differences(name, json.loads(committed), json.loads(found.read_text()))
    committed_lock = _committed(root, "dvc.lock")
    if committed_lock is None:
        return differences + ["dvc.lock: not committed, nothing to compare the outputs with"]
    return differences + lock_differences(yaml.safe_load(committed_lock),
                                          yaml.safe_load((rerun / "dvc.lock").read_text()))


def rerun_committed(root: Path, workspace: Path) -> Path:
    """Clone HEAD into ``workspace``, give it the raw data and run ``dvc repro`` there."""
    clone = workspace / "rerun"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    shutil.copytree(root / "data" / "raw", clone / "data" / "raw")
    LOGGER.info("reproducing the committed study in %s (this is a full run)", clone)
    subprocess.run(["dvc", "repro"], cwd=clone, check=True, env=project_tools_environment())
    return clone


def verify(root: Path, keep: bool = False) -> list[str]:
    """Rerun from scratch and return the differences (empty: the commit reproduces)."""
    workspace = Path(tempfile.mkdtemp(prefix="imgpipe-verify-"))
    try:
        return compare_with_commit(root, rerun_committed(root, workspace))
    finally:
        if keep:
            LOGGER.info("the rerun is kept in %s", workspace)
        else:
            shutil.rmtree(workspace, ignore_errors=True)
