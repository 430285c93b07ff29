"""The processes a stage starts end with it.

``imgpipe run`` starts a Jupyter kernel (in its own session, so a terminal's Ctrl-C does not reach it),
and the kernel may start decoding processes or a gRPC server. When the stage is stopped — a signal to
``imgpipe run``, or to ``dvc repro`` above it — all of them must stop at once, or they would go on to
write outputs that ``dvc.lock`` never records. Linux's ``PR_SET_PDEATHSIG`` ties a process to its
parent's life; :func:`kill_tree` ends every process below this one and their process groups.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

LOGGER = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``signum`` to this process when its parent ends (no-op where unsupported)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _parents() -> dict[int, int]:
    """Every visible process id and its parent's, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()   # the command name may hold spaces and parentheses
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """The ids of every process below ``pid`` (children, their children, …)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children.get(child, [])
    return found


def kill_tree(groups: Iterable[int] = (), descendants_too: bool = True) -> None:
    """SIGKILL every process of ``groups`` (e.g. a kernel's session, which holds the processes it started even
    after they were orphaned) and, with ``descendants_too``, every process below this one."""
    me = os.getpid()
    for group in set(groups) - {os.getpgid(me)}:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in descendants(me) if descendants_too else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop_on_signals(cleanup: Callable[[], None], groups: Callable[[], Iterable[int]]) -> None:
    """On SIGTERM, SIGINT or SIGHUP (also sent when the parent, e.g. ``dvc repro``, dies): kill every process
    this one started, run ``cleanup`` and exit with 128 + the signal's number, without another word written."""
    def stop(signum: int, _frame: object) -> None:
        kill_tree(groups())
        try:
            cleanup()
        finally:
            LOGGER.error("stopped by %s: the stage's kernel and every process it started were killed; its partial "
                         "files were removed and no output was written", signal.Signals(signum).name)
            os._exit(128 + signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    die_with_parent(signal.SIGTERM)
