"""Write environment.yml from requirements.lock so the conda environment carries the same pins.

Usage: python tools/environment_from_lock.py [--check]
With --check, exit 1 (and say which pins differ) when environment.yml is out of step.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)")


def lock_pins(lock: Path) -> list[str]:
    """Every ``name==version`` pinned in a pip lock file, in file order."""
    return [f"{m.group(1)}=={m.group(2)}" for line in lock.read_text().splitlines() if (m := PIN.match(line))]


def render_environment(pins: list[str]) -> str:
    """The environment.yml text for these pins."""
    lines = [
        "# Generated from requirements.lock by tools/environment_from_lock.py; do not edit by hand.",
        "# conda env create -f environment.yml && conda activate imgpipe && pip install --no-deps -e .",
        "name: imgpipe",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        *[f"      - {pin}" for pin in pins],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    expected = render_environment(lock_pins(ROOT / "requirements.lock"))
    target = ROOT / "environment.yml"
    if "--check" in argv:
        current = target.read_text() if target.exists() else ""
        if current == expected:
            return 0
        missing = sorted(set(expected.splitlines()) - set(current.splitlines()))
        extra = sorted(set(current.splitlines()) - set(expected.splitlines()))
        sys.stderr.write(f"environment.yml is out of step with requirements.lock: missing {missing}, extra {extra}\n")
        return 1
    target.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
