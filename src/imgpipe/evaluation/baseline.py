"""The report's baseline: the workspace's results against the committed ones.

When the results in the workspace are not those of the commit checked out (an experiment, a
rerun on another machine, changed params), the report opens with the comparison and its
provenance says so. The committed side is read from git (``git show HEAD:…``), which DVC does
not track: moving HEAD alone does not rerun the report, so the section describes the commit that
was checked out when the report was built, and says which one.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from imgpipe.artifacts.files import load_json
from imgpipe.evaluation.compare import Comparison, compare
from imgpipe.evaluation.compare_views import render_section
from imgpipe.evaluation.revisions import WORKSPACE, CompareError, Side, git


def is_committed_run(comparison: Comparison) -> bool:
    """Whether the workspace holds the committed results: same labels and probabilities, params, data, machine."""
    return (not comparison.params and comparison.data_match and not comparison.missing
            and all(m.verdict == "identical" and m.same_probabilities is not False and not m.fingerprint_differences
                    for m in comparison.models))


def compare_with_commit(root: Path) -> Comparison | str | None:
    """The comparison of the workspace with HEAD; None when HEAD has no results or the same ones; the reason
    as text when the two cannot be compared (the report is published all the same)."""
    head = (git(root, "rev-parse", "HEAD") or "").strip()
    committed = Side(root, "committed run", head) if head else None
    if committed is None or not committed.models():
        return None
    try:
        comparison = compare(committed, Side(root, WORKSPACE, None))
    except CompareError as error:
        return f"The workspace's results could not be compared with the committed run of {head[:12]}: {error}"
    return None if is_committed_run(comparison) else comparison


def section(comparison: Comparison | str | None) -> str:
    """The report's "Compared with the committed run" section (empty when the workspace is the commit)."""
    if isinstance(comparison, str):
        return f"<h2>Compared with the committed run</h2>\n<p>{html.escape(comparison)}</p>\n"
    return render_section(comparison) if comparison else ""


def machine_summary(fingerprint: dict[str, Any]) -> str:
    """One line: CPU, the widest vector and matrix extensions, threads, oneDNN, precision, GPUs."""
    isa = [flag for flag in fingerprint.get("isa", []) if flag.startswith(("avx512f", "avx512_", "amx", "avx2"))]
    return (f"{fingerprint.get('cpu_model', '?')}; {' '.join(isa) or 'no AVX2'}; "
            f"{fingerprint.get('intra_op_threads', '?')} intra-op / {fingerprint.get('inter_op_threads', '?')} "
            f"inter-op threads; oneDNN {'on' if fingerprint.get('onednn_opts') else 'off'}; "
            f"{fingerprint.get('precision_policy', '?')}; GPU: {', '.join(fingerprint.get('gpus') or []) or 'none'}")


def provenance(root: Path, comparison: Comparison | str | None, models: list[str]) -> dict[str, str]:
    """Provenance lines: which commit the results are (or are not), and each model's training machine."""
    head = (git(root, "rev-parse", "HEAD") or "").strip()
    if isinstance(comparison, str):
        state = f"workspace differs from {head[:12]} (not comparable: see the first section)"
    elif comparison is not None:
        state = (f"workspace differs from {head[:12]} ({comparison.first['run_date']}); "
                 f"workspace {comparison.second['run_date']}")
    elif head and Side(root, "HEAD", head).models():
        state = f"the committed run of {head[:12]}"
    else:
        state = "no committed results to compare with"
    lines = {"results": state}
    for model in models:
        path = root / "fingerprints" / "train" / f"{model}.json"
        if path.is_file():
            lines[f"machine (train {model})"] = machine_summary(load_json(path))
    return lines
