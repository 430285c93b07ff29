"""What a stage prints: its kernel's log at the real level, one summary line, and a table of all stages.

The stage notebooks log with ``logging.basicConfig`` (``LEVEL:logger:message`` on the kernel's
stderr). :class:`KernelLog` receives the kernel's stdout and stderr from Papermill and re-emits each
record at its own level under its own logger name; everything else the kernel writes (TensorFlow's
notes, Python warnings, printed output) is kept for ``--verbose``. Each finished stage leaves a small
record under ``.imgpipe/stages/`` (ignored by git and DVC) from which ``imgpipe summary`` prints a table.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGE_ORDER = ("preprocess", "split", "train", "crossval", "evaluate", "export", "report")
VERBOSE_ENV = "IMGPIPE_VERBOSE"
STALE_MARK = "(*)"
_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.\-]+):(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class KernelLog:
    """A file-like sink for a kernel's stream: log records at their own level, other lines at DEBUG;
    anything below ``threshold`` is dropped (the executed notebook keeps it)."""

    def __init__(self, stage: str, threshold: int = logging.WARNING) -> None:
        self.stage = stage
        self.threshold = threshold
        self._pending = ""
        self._last: tuple[logging.Logger, int, list[str]] | None = None

    def write(self, text: str) -> int:
        self._pending += _ANSI.sub("", text)
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        """Emit what is complete; a partial line waits for its end (or :meth:`close`)."""

    def close(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = ""
        self._emit()

    def _line(self, line: str) -> None:
        match = _RECORD.match(line)
        if match:
            self._emit()
            level, name, message = match.groups()
            self._last = (logging.getLogger(name), getattr(logging, level), [message])
        elif self._last is not None and line.startswith((" ", "\t")):
            self._last[2].append(line)                  # a traceback or a wrapped message continues
        elif line.strip():
            self._emit()
            if self.threshold <= logging.DEBUG:
                logging.getLogger(f"kernel.{self.stage}").debug("%s", line)

    def _emit(self) -> None:
        if self._last is not None:
            logger, level, lines = self._last
            if level >= self.threshold:
                logger.log(level, "%s", "\n".join(lines))
            self._last = None


def _percent(value: float) -> str:
    return f"{value:.2%}"


def key_figure(stage: str, metrics: dict[str, Any]) -> str:
    """The one figure that says how a stage went, from its metrics file."""
    if stage == "preprocess" and "kept_images" in metrics:
        return f"{metrics['kept_images']:,} images kept, {metrics.get('dropped_images', 0):,} dropped"
    if stage == "split" and "train_images" in metrics:
        return (f"{metrics['train_images']:,} train / {metrics.get('val_images', 0):,} validation / "
                f"{metrics.get('test_images', 0):,} test images")
    if stage == "train" and "best_val_accuracy" in metrics:
        return (f"validation accuracy {_percent(metrics['best_val_accuracy'])} "
                f"(epoch {metrics.get('best_epoch', '?')} of {metrics.get('epochs_run', '?')})")
    if stage == "evaluate" and "accuracy" in metrics:
        return (f"test accuracy {_percent(metrics['accuracy'])} "
                f"[{_percent(metrics['accuracy_ci_low'])}, {_percent(metrics['accuracy_ci_high'])}]")
    if stage == "crossval":
        if "accuracy_mean" in metrics:
            return f"accuracy {_percent(metrics['accuracy_mean'])} ± {_percent(metrics['accuracy_std'])}"
        return "skipped (not requested)"
    if stage == "export" and "version" in metrics:
        return f"version {metrics['version']}, {metrics.get('labels_that_differ', 0)} labels differ from evaluate"
    if stage == "report":
        return "reports/index.html"
    return ""


def record_stage(records: Path, name: str, stage: str, seconds: float, figure: str) -> str:
    """Save one finished stage's record and return its summary line."""
    records.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "stage": stage, "seconds": round(seconds, 1), "figure": figure,
             "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (records / f"{name}.json").write_text(json.dumps(entry) + "\n", encoding="utf-8")
    return summary_line(entry)


def summary_line(entry: dict[str, Any]) -> str:
    return f"{entry['name']:<20} {entry['seconds']:>7.1f} s  {entry['figure']}"


def summary_table(records: Path, current_figure: Callable[[str], str] | None = None) -> str:
    """Every recorded stage in pipeline order: name, time, key figure, when it finished.

    ``current_figure(name)`` gives the key figure of the outputs in place now. Where it differs from the
    recorded one, those outputs did not come from the timed run (a ``dvc checkout``, a restore from the
    cache, a later edit), and the row says so and shows both.
    """
    entries = [json.loads(path.read_text(encoding="utf-8")) for path in records.glob("*.json")]
    if not entries:
        return "No stage has run here yet (run `dvc repro`)."
    rank = {stage: index for index, stage in enumerate(STAGE_ORDER)}
    entries.sort(key=lambda entry: (rank.get(entry["stage"], len(rank)), entry["finished"], entry["name"]))
    header = f"{'stage':<20} {'time':>9}  {'finished':<19}  result"
    changed = {entry["name"]: now for entry in entries
               if current_figure and (now := current_figure(entry["name"])) != entry["figure"]}
    rows = [f"{entry['name']:<20} {entry['seconds']:>7.1f} s  {entry['finished']:<19}  {entry['figure']}"
            + (f" {STALE_MARK} now: {changed[entry['name']] or 'no metrics file'}" if entry["name"] in changed else "")
            for entry in entries]
    total = sum(entry["seconds"] for entry in entries)
    lines = [header, "-" * len(header), *rows, "-" * len(header), f"{'total':<20} {total:>7.1f} s"]
    if changed:
        lines.append(f"{STALE_MARK} the outputs in place now are not those of the run timed here; "
                     "rerun the stage (`dvc repro -f -s NAME`) to time them.")
    return "\n".join(lines)
