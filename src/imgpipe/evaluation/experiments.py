"""``imgpipe experiments``: the baseline and every DVC experiment run on it, one row each.

Each row: the experiment's name, only the params that differ from the baseline, the test accuracy
of every model, and the verdict against the baseline (the worst of its models', see ``compare``).
Experiments are read from their git refs (``refs/exps``), the same commits ``dvc exp show`` lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgpipe.evaluation.compare import VERDICTS, compare, load_predictions
from imgpipe.evaluation.compare_views import WIDTH, percent, short
from imgpipe.evaluation.revisions import CompareError, Side, experiments, git
from imgpipe.evaluation.statistics import confusion_counts, metrics_from_confusion


def _accuracy(side: Side, model: str) -> float:
    predictions = load_predictions(side, model)
    return float(metrics_from_confusion(confusion_counts(predictions.actual, predictions.predicted,
                                                         len(predictions.classes)))["accuracy"])


def experiment_rows(root: Path) -> list[dict[str, Any]]:
    """The baseline (HEAD) and each experiment whose baseline is HEAD, oldest first."""
    head = (git(root, "rev-parse", "HEAD") or "").strip()
    if not head:
        raise CompareError(f"{root} has no commit yet: commit a run first, it is the baseline experiments start from.")
    baseline = Side(root, "baseline", head)
    models = baseline.models()
    rows: list[dict[str, Any]] = [{"name": "baseline", "commit": head, "params": {},
                                   "accuracy": {m: _accuracy(baseline, m) for m in models},
                                   "verdicts": {}, "verdict": "—"}]
    for experiment in (exp for exp in experiments(root) if exp.baseline == head):
        side = Side(root, experiment.name, experiment.commit)
        comparison = compare(baseline, side)
        verdicts = {m.model: m.verdict for m in comparison.models}
        worst = max(verdicts.values(), key=VERDICTS.index, default="—")
        named = [m for m, v in verdicts.items() if v == worst] if worst != "identical" else []
        rows.append({"name": experiment.name, "commit": experiment.commit,
                     "params": {key: after for key, _, after in comparison.params},
                     "accuracy": {m.model: m.accuracy[1] for m in comparison.models},
                     "verdicts": verdicts, "verdict": f"{worst} ({', '.join(named)})" if named else worst})
    return rows


def render_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a table of at most 100 columns; several changed params take one line each."""
    models = list(rows[0]["accuracy"])
    fixed = [("experiment", 18), *((short(m, 9), 9) for m in models), ("verdict vs baseline", 22)]
    params_width = max(16, WIDTH - sum(width + 2 for _, width in fixed))
    columns = [fixed[0], ("params that differ", params_width), *fixed[1:]]
    def line(cells: list[str]) -> str:
        return "  ".join(short(cell, width).ljust(width) for cell, (_, width) in zip(cells, columns, strict=True)).rstrip()
    out = [line([name for name, _ in columns]), line(["-" * width for _, width in columns])]
    for row in rows:
        changed = [f"{key}={value}" for key, value in row["params"].items()] or ["—"]
        scores = [percent(row["accuracy"][m]) if m in row["accuracy"] else "—" for m in models]
        out.append(line([row["name"], changed[0], *scores, row["verdict"]]))
        out += [line(["", more, *[""] * len(models), ""]) for more in changed[1:]]
    return "\n".join(out)
