"""Helpers shared by the tests that run the real command-line tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "imgpipe tests", "GIT_AUTHOR_EMAIL": "tests@imgpipe.invalid",
                "GIT_COMMITTER_NAME": "imgpipe tests", "GIT_COMMITTER_EMAIL": "tests@imgpipe.invalid"}


def run(command: list[str], cwd: Path, check: bool = True,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_IDENTITY, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(extra_env or {})}
    env.pop("IMGPIPE_ROOT", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def copy_working_tree(source: Path, target: Path) -> None:
    """Copy what git would clone (tracked and unignored files), plus the raw data."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    shutil.copytree(source / "data" / "raw", target / "data" / "raw")
