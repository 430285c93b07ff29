"""What each stage reads from ``src``: the imgpipe modules its notebook imports, followed through their own
imports, plus its family's module for per-model stages (loaded by name from the registry) and what the
family modules import.

``dvc.yaml`` must list exactly these files, or DVC would report a stage up to date after a change to code
it runs; ``tools/sync_dvc_deps.py`` writes them and the tests hold them equal.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

from imgpipe.pipeline.stages import Stage

FAMILIES_PACKAGE = "imgpipe.models.families"
FAMILY_MODULE = f"src/{FAMILIES_PACKAGE.replace('.', '/')}/${{item}}.py"


def module_file(module: str, src: Path) -> Path | None:
    """The source file of an imgpipe module, or None for a name that is not a module (or a package)."""
    file = src / f"{module.replace('.', '/')}.py"
    return file if file.is_file() else None


def imported_modules(source: str, src: Path) -> set[str]:
    """The imgpipe modules a piece of code imports (``from imgpipe.pkg import module`` included)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
    return {module for module in modules if module.startswith("imgpipe.") and module_file(module, src)}


def imgpipe_closure(modules: set[str], src: Path) -> set[str]:
    """The imgpipe modules reachable from ``modules`` through imports."""
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        pending += imported_modules(module_file(module, src).read_text(), src)
    return seen


def notebook_code(path: Path) -> str:
    """Every code cell of a notebook, joined."""
    return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")


def family_imports(src: Path) -> set[str]:
    """The imgpipe modules the family modules import (the same list serves every model of a per-model stage)."""
    folder = src / FAMILIES_PACKAGE.replace(".", "/")
    return set().union(*(imported_modules(path.read_text(), src) for path in sorted(folder.glob("[!_]*.py"))))


def stage_sources(entry: Stage, root: Path) -> list[str]:
    """The notebook and the ``src`` files a stage reads, as ``dvc.yaml`` lists them (sorted, notebook first)."""
    src = root / "src"
    modules = imgpipe_closure(imported_modules(notebook_code(root / "notebooks" / entry.notebook), src), src)
    if entry.per_model:
        modules |= imgpipe_closure(family_imports(src), src)
    files = {f"src/{module.replace('.', '/')}.py" for module in modules}
    return [f"notebooks/{entry.notebook}", *sorted(files | ({FAMILY_MODULE} if entry.per_model else set()))]
