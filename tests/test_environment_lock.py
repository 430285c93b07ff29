"""environment.yml carries exactly the pins of requirements.lock (tools/environment_from_lock.py writes it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_environment_yml_matches_the_lock(project_root: Path) -> None:
    check = subprocess.run([sys.executable, "tools/environment_from_lock.py", "--check"], cwd=project_root,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
