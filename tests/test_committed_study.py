"""The committed results belong to the committed code: every file that git tracks and ``dvc.lock`` records
(the stages' code, notebooks and metrics) has the checksum the lock gives it, so ``dvc status`` on a clone
finds no stage changed by its code and the report describes this commit's study."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml


def _locked_files(lock: dict) -> list[tuple[str, str, str]]:
    """(stage, path, md5) for every file dependency and output in ``dvc.lock`` (folders left out)."""
    return [(stage, entry["path"], entry["md5"]) for stage, definition in lock["stages"].items()
            for key in ("deps", "outs") for entry in definition.get(key, [])
            if "md5" in entry and "nfiles" not in entry]


def test_every_git_tracked_file_in_dvc_lock_has_its_locked_checksum(project_root: Path) -> None:
    tracked = set(subprocess.run(["git", "ls-files"], cwd=project_root, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    locked = [(stage, path, md5) for stage, path, md5 in _locked_files(yaml.safe_load((project_root / "dvc.lock").read_text()))
              if path in tracked]
    assert len(locked) > 50, "dvc.lock records too few git-tracked files: is it the study's lock?"
    stale = [f"{stage}: {path}" for stage, path, md5 in locked
             if hashlib.md5((project_root / path).read_bytes()).hexdigest() != md5]
    assert not stale, ("these files differ from what dvc.lock records; rerun the stages (dvc repro) or, where "
                       "the change cannot alter the results, record it (dvc commit STAGE):\n" + "\n".join(stale))
