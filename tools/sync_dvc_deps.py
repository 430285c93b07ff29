"""Rewrite each stage's notebook and src/ dependencies in dvc.yaml from what its notebook imports.

Usage: python tools/sync_dvc_deps.py   (from the project root; tests/test_notebooks.py checks the result)
Only the `- notebooks/…` and `- src/…py` lines of each stage's `deps:` list change; the rest of the file
(comments, data dependencies, outputs) is kept as it is.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from imgpipe.pipeline.dependencies import stage_sources
from imgpipe.pipeline.stages import STAGES

LOGGER = logging.getLogger("sync_dvc_deps")
_SOURCE_LINE = re.compile(r"^(\s*)- (notebooks/\S+\.ipynb|src/\S+\.py)\s*$")


def rewrite(text: str, root: Path) -> str:
    """``dvc.yaml``'s text with every stage's source dependencies replaced by those its notebook needs."""
    lines, out, stage_name, in_deps, written = text.splitlines(keepends=True), [], None, False, set()
    sources = {entry.name: stage_sources(entry, root) for entry in STAGES}
    for line in lines:
        if (match := re.match(r"^  (\w+):\s*$", line)) and match.group(1) in sources:
            stage_name = match.group(1)
        if re.match(r"^\s+deps:\s*$", line):
            in_deps = True
            out.append(line)
            continue
        if in_deps and (source := _SOURCE_LINE.match(line)):
            if stage_name not in written:
                out += [f"{source.group(1)}- {path}\n" for path in sources[stage_name]]
                written.add(stage_name)
            continue
        if in_deps and not re.match(r"^\s+- ", line):
            in_deps = False
        out.append(line)
    return "".join(out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = Path.cwd() / "dvc.yaml"
    before = path.read_text()
    after = rewrite(before, Path.cwd())
    path.write_text(after)
    LOGGER.info("dvc.yaml %s", "rewritten" if after != before else "already up to date")
