"""How much memory this process may use, and a check that a setting fits it before work starts.

A setting such as ``preprocess.image_size: [100000, 100000]`` or ``train.cnn.batch_size: 1000000000``
is valid in form but cannot run: the kernel's OOM killer would end the process minutes later with
no word of why. Each stage estimates what its settings need and calls :func:`require_memory` first.
"""

from __future__ import annotations

import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


class ResourceError(ValueError):
    """A setting needs more memory (or another resource) than this machine can give."""


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """The smallest ``memory.max - memory.current`` of this process's cgroup (v2) and its ancestors."""
    try:
        line = next(line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    folder = _CGROUP_ROOT / line.removeprefix("0::").strip("/")
    headroom = None
    while folder.is_relative_to(_CGROUP_ROOT):
        limit = _read_number(folder / "memory.max")
        if limit is not None:
            room = max(0, limit - (_read_number(folder / "memory.current") or 0))
            headroom = room if headroom is None else min(headroom, room)
        if folder == _CGROUP_ROOT:
            break
        folder = folder.parent
    return headroom


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def available_memory_bytes() -> int:
    """Memory this process can still get: the machine's available memory, capped by its cgroup's limit."""
    available = _meminfo_available()
    headroom = _cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def gib(size: float) -> str:
    """A byte count in GiB for messages."""
    return f"{size / 2**30:,.1f} GiB"


def require_memory(needed: float, setting: str, advice: str) -> None:
    """Raise :class:`ResourceError` naming ``setting`` when ``needed`` bytes exceed the available memory."""
    available = available_memory_bytes()
    if needed > available:
        raise ResourceError(f"{setting} needs about {gib(needed)} of memory, but only {gib(available)} is "
                            f"available on this machine; {advice}")
