"""The faces of a comparison: a terminal table (≤ 100 columns), and an HTML section or page."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import jinja2

from imgpipe.evaluation.compare import Comparison, ModelComparison
from imgpipe.training.fingerprint import NUMERIC_FIELDS

WIDTH = 100
TEMPLATES = Path(__file__).parents[1] / "templates"


def percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2%}"


def points(interval: tuple[float, float] | None, first: float, second: float) -> str:
    """``second − first`` in percentage points with its interval, e.g. ``-0.40 [-1.20, +0.40]``."""
    if interval is None or math.isnan(first):
        return "—"
    return f"{(second - first) * 100:+.2f} [{interval[0] * 100:+.2f}, {interval[1] * 100:+.2f}]"


def model_rows(result: ModelComparison) -> list[list[str]]:
    """Two table rows per model: accuracy (with the test and verdict) and macro-F1."""
    differ = f"{result.labels_differ} of {result.test_images}" if result.accuracy_difference_ci else "—"
    p_value = f"{result.p_value:.3g}" if result.accuracy_difference_ci else "—"
    return [[result.model[:11], "accuracy", percent(result.accuracy[0]), percent(result.accuracy[1]),
             points(result.accuracy_difference_ci, *result.accuracy), differ, p_value, result.verdict],
            ["", "macro-F1", percent(result.f1_macro[0]), percent(result.f1_macro[1]),
             points(result.f1_macro_difference_ci, *result.f1_macro), "", "", ""]]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def short(value: Any, width: int) -> str:
    """A value on one line, cut to ``width`` characters."""
    text = (" ".join(map(str, value)) or "none") if isinstance(value, list) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def fingerprint_rows(comparison: Comparison) -> list[list[str]]:
    """Field, first value, second value and a mark for each numerics-relevant fingerprint field."""
    first, second = comparison.fingerprints
    if first is None and second is None:
        return []
    rows = []
    for name in NUMERIC_FIELDS:
        a, b = (first or {}).get(name, "—"), (second or {}).get(name, "—")
        if name == "isa" and a != b and isinstance(a, list) and isinstance(b, list):
            a, b = [f for f in a if f not in b] or ["(none more)"], [f for f in b if f not in a] or ["(none more)"]
        rows.append([name, short(a, 36), short(b, 36), "" if a == b else "≠"])
    return rows


def render_text(comparison: Comparison) -> str:
    """The comparison as plain text no wider than 100 columns."""
    c = comparison
    s = c.settings
    lines = [f"A = {c.first['shown_as']}, {c.first['run_date']}",
             f"B = {c.second['shown_as']}, {c.second['run_date']}",
             f"Paired on the same test images; {s['confidence_level']:.0%} paired-bootstrap intervals of B − A in "
             f"percentage points ({int(s['bootstrap_resamples'])} resamples); McNemar's exact test, "
             f"α = {s['significance_level']}.", ""]
    header = ["model", "metric", "A", "B", "B − A (pp) [CI]", "labels differ", "p", "verdict"]
    lines += _table(header, [row for result in c.models for row in model_rows(result)])
    lines += [""] + [f"{result.model}: {result.verdict} — {result.reason}" + _machine_note(result)
                     for result in c.models]
    lines += [f"not compared: {line}" for line in c.missing]
    lines += ["", "Data and split (dvc.lock): " + ("same checksums" if c.data_match else "DIFFER")]
    for name, (a, b) in c.data.items():
        lines.append(f"  {name:<9} A {a or 'not recorded'}  B {b or 'not recorded'}" + ("" if a == b else "  ≠"))
    lines += ["", f"Params that differ: {len(c.params)}" + (" (A → B)" if c.params else "")]
    lines += [short(f"  {key}: {short(a, 30)} → {short(b, 30)}", WIDTH) for key, a, b in c.params]
    rows = fingerprint_rows(c)
    if rows:
        lines += ["", f"Machine fingerprints (train stage of {c.fingerprint_model}; ≠: can change the numbers; isa: "
                      "the flags only one side has)"]
        lines += ["  " + line for line in _table(["field", "A", "B", ""], rows)]
    return "\n".join(wrapped for line in lines
                     for wrapped in (textwrap.wrap(line, WIDTH, subsequent_indent="  ") if len(line) > WIDTH else [line]))


def _machine_note(result: ModelComparison) -> str:
    if not result.fingerprint_differences:
        return "; same machine fingerprint"
    return "; fingerprints differ: " + ", ".join(result.fingerprint_differences)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def _context(comparison: Comparison, title: str) -> dict[str, Any]:
    return {"c": comparison, "title": title, "percent": percent, "points": points,
            "rows": fingerprint_rows(comparison), "short": short, "machine_note": _machine_note}


def render_section(comparison: Comparison, title: str = "Compared with the committed run") -> str:
    """An HTML fragment (every value escaped) for the report page."""
    return _environment().get_template("compare/section.html.j2").render(**_context(comparison, title))


def render_page(comparison: Comparison, title: str) -> str:
    """A self-contained HTML page (every value escaped), styled like the report."""
    return _environment().get_template("compare/page.html.j2").render(**_context(comparison, title))
