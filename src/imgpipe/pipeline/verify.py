"""``imgpipe verify``: rerun the committed study from scratch and judge it against the commit.

The committed revision is cloned into a temporary folder, given the verified raw data, and
reproduced with ``dvc repro``. The rerun is then compared with the commit by ``imgpipe compare``,
model by model. What to expect depends on the machine: with the same fingerprint (CPU, instruction
set, threads, oneDNN, precision, versions) the rerun must be bit-identical — the same label on every
test image and the same probabilities; on another machine other kernels and another reduction order
give other bits, so it must be consistent (no significant difference). The data and the split
must have the same checksums either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imgpipe.evaluation.compare import Comparison, ModelComparison, compare, worse_than
from imgpipe.evaluation.revisions import Side, git

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judgement:
    """What verify found: the comparison, one explanation per model, and the failures (empty: verified)."""

    comparison: Comparison
    notes: list[str]
    failures: list[str]


def expected_verdict(result: ModelComparison) -> str:
    """identical on the same machine fingerprint, consistent on another."""
    return "consistent" if result.fingerprint_differences else "identical"


def _note(result: ModelComparison) -> str:
    expected = expected_verdict(result)
    if expected == "identical":
        why = "same machine fingerprint, so a bit-identical rerun is expected"
    else:
        why = (f"the machine fingerprint differs ({', '.join(result.fingerprint_differences)}): other kernels or "
               "another summation order give other bits, so a consistent rerun is expected, not an identical one")
    return f"{result.model}: {why}; found {result.verdict} ({result.reason})."


def judge(comparison: Comparison) -> Judgement:
    """Hold every model's verdict to what its fingerprint leads one to expect; data and split must match."""
    notes, failures = [], []
    for result in comparison.models:
        notes.append(_note(result))
        expected = expected_verdict(result)
        if worse_than(result.verdict, expected):
            failures.append(f"{result.model}: {result.verdict}, {expected} expected ({result.reason}).")
        elif expected == "identical" and result.same_probabilities is False:
            failures.append(f"{result.model}: the same labels, but its test-set probabilities differ at the bit level "
                            "(data/predictions md5 in dvc.lock) although the machine fingerprint is the same.")
    if not comparison.data_match:
        changed = [name for name, (a, b) in comparison.data.items() if a != b or a is None]
        failures.append(f"data and split: the checksums in dvc.lock differ or are missing for {', '.join(changed)}.")
    failures += [f"not compared: {line}." for line in comparison.missing]
    if not comparison.models:
        failures.append("no model's predictions were found in the commit and the rerun.")
    return Judgement(comparison, notes, failures)


def project_tools_environment(code: Path | None = None) -> dict[str, str]:
    """This environment with the interpreter's bin folder first on PATH, so `dvc` and the stages'
    `imgpipe` are the project's own even when the virtual environment is not activated; with ``code``
    (a clone), its ``src`` comes first on PYTHONPATH, so every stage and kernel runs that clone's
    package rather than the working copy's (which an editable install would otherwise give)."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if code is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code / "src"), os.environ.get("PYTHONPATH")]))
    return environment


def verify_rerun(root: Path, rerun: Path) -> Judgement:
    """Judge the rerun in ``rerun`` against the commit checked out in ``root``."""
    head = (git(root, "rev-parse", "HEAD") or "").strip()
    return judge(compare(Side(root, "committed", head), Side(rerun, "rerun", None)))


def rerun_committed(root: Path, workspace: Path) -> Path:
    """Clone HEAD into ``workspace``, give it the raw data and run ``dvc repro`` there."""
    clone = workspace / "rerun"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    shutil.copytree(root / "data" / "raw", clone / "data" / "raw")
    LOGGER.info("reproducing the committed study in %s (this is a full run)", clone)
    subprocess.run(["dvc", "repro"], cwd=clone, check=True, env=project_tools_environment(clone))
    return clone


def verify(root: Path, keep: bool = False) -> Judgement:
    """Rerun from scratch and judge the rerun against the commit."""
    workspace = Path(tempfile.mkdtemp(prefix="imgpipe-verify-"))
    try:
        return verify_rerun(root, rerun_committed(root, workspace))
    finally:
        if keep:
            LOGGER.info("the rerun is kept in %s", workspace)
        else:
            shutil.rmtree(workspace, ignore_errors=True)
