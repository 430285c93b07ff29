"""One side of a comparison: the workspace, a git revision or a DVC experiment, and its files.

Everything a comparison reads is git-tracked (``evaluation/<model>/predictions.csv``, ``params.yaml``,
``dvc.lock``, the fingerprints), so a side is read with ``git show REV:PATH`` and needs no DVC
cache. DVC experiments are git commits too, under ``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imgpipe.models.registry import family_names

WORKSPACE = "workspace"


class CompareError(ValueError):
    """A side cannot be found or one of its files is not what the evaluate stage writes."""


def git(root: Path, *args: str) -> str | None:
    """Stdout of a git command in ``root``, or None when it fails."""
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class Experiment:
    """A DVC experiment: its name, its commit and the commit it was run on."""

    name: str
    commit: str
    baseline: str


def experiments(root: Path) -> list[Experiment]:
    """Every DVC experiment in the repository (queued and running ones excepted), oldest first."""
    listed = git(root, "for-each-ref", "--sort=committerdate", "--format=%(refname) %(objectname)", "refs/exps")
    found = []
    for line in (listed or "").splitlines():
        ref, commit = line.split()
        parts = ref.split("/")
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38:
            found.append(Experiment(parts[4], commit, parts[2] + parts[3]))
    return found


@dataclass(frozen=True)
class Side:
    """The files of one run: the working tree of ``root`` (``commit`` None) or a commit of its repository."""

    root: Path
    label: str
    commit: str | None

    @property
    def short(self) -> str:
        """The label, with the abbreviated commit when the label is not the commit itself."""
        if self.commit is None or self.label.startswith(self.commit[:7]):
            return self.label
        return f"{self.label} ({self.commit[:7]})"

    def read(self, path: str) -> str | None:
        """A file's text, or None when this side has no such file."""
        if self.commit is None:
            file = self.root / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        return git(self.root, "show", f"{self.commit}:{path}")

    def where(self, path: str) -> str:
        """``path`` as a user finds it: in the working tree or at a revision."""
        return str(self.root / path) if self.commit is None else f"{path} at {self.short}"

    def models(self) -> list[str]:
        """The models this side has test-set predictions of (``evaluation/<model>/predictions.csv``)."""
        if self.commit is None:
            names = [file.parent.name for file in self.root.glob("evaluation/*/predictions.csv")]
        else:
            listed = git(self.root, "ls-tree", "-r", "--name-only", self.commit, "evaluation") or ""
            names = [PurePosixPath(name).parent.name for name in listed.split()
                     if PurePosixPath(name).name == "predictions.csv" and len(PurePosixPath(name).parts) == 3]
        return in_table_order(names)

    def run_date(self) -> str:
        """When this side's results were made: 'committed <date>', or the newest predictions file's time."""
        if self.commit is not None:
            stamp = (git(self.root, "log", "-1", "--format=%ct", self.commit) or "").strip()
            return f"committed {_utc(float(stamp))}" if stamp else "commit date unknown"
        times = [file.stat().st_mtime for file in self.root.glob("evaluation/*/predictions.csv")]
        return f"results of {_utc(max(times))}" if times else "no results"


def in_table_order(names: list[str]) -> list[str]:
    """``names`` in the report's order: registered families by rank, then any other name alphabetically."""
    order = {name: position for position, name in enumerate(family_names())}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def resolve_side(root: Path, spec: str) -> Side:
    """Turn ``workspace``, a git revision or a DVC experiment name into a side, or say what exists."""
    if spec == WORKSPACE:
        return Side(root, WORKSPACE, None)
    commit = git(root, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if commit:
        return Side(root, spec, commit.strip())
    head = (git(root, "rev-parse", "HEAD") or "").strip()
    matches = [exp for exp in experiments(root) if exp.name == spec]
    if matches:
        chosen = ([exp for exp in matches if exp.baseline == head] or matches)[-1]
        return Side(root, spec, chosen.commit)
    known = ", ".join(sorted({exp.name for exp in experiments(root)})) or "none"
    raise CompareError(f"{spec!r} is neither 'workspace', a git revision of {root} nor a DVC experiment "
                       f"(experiments there: {known}). Give a branch, tag or commit, an experiment name from "
                       "`dvc exp show`, or 'workspace'.")
