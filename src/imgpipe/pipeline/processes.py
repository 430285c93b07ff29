"""The processes a stage starts end with it.

``imgpipe run`` starts a Jupyter kernel (in its own session, so a terminal's Ctrl-C does not reach it),
and the kernel may start decoding processes or a gRPC server. When the stage is stopped — a signal to
``imgpipe run``, or to ``dvc repro`` above it — all of them must stop at once, or they would go on to
write outputs that ``dvc.lock`` never records. Linux's ``PR_SET_PDEATHSIG`` ties a process to its
parent's life; where the parent is only a ``sh -c`` wrapper (DVC runs a stage's command through
``$SHELL -c``, or ``/bin/sh -c`` when that is unset, and the shell may stay alive as the parent), a
thread watches the process that ran the wrapper instead. :func:`kill_tree` ends every process below this one
and their process groups.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"})


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``signum`` to this process when its parent ends (no-op where unsupported)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _parent_of(pid: int | str) -> int:
    """The parent's id of process ``pid`` from /proc (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2:].split()[1])   # the command name may hold spaces and parentheses


def _is_command_wrapper(pid: int) -> bool:
    """Whether ``pid`` is a shell that only runs a command line (``sh -c …``)."""
    command = _command_line(pid)
    return len(command) >= 2 and Path(command[0]).name in SHELLS and "-c" in command[1:-1]


def launcher() -> int:
    """The process that started this one, looking through ``sh -c`` wrappers (0 if unknown)."""
    pid = os.getppid()
    while pid > 1 and _is_command_wrapper(pid):
        pid = _parent_of(pid)
    return pid


def _wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has ended."""
    try:
        descriptor = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while True:                                       # no pidfd: poll (kernels older than 5.3)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(1.0)
    try:
        select.select([descriptor], [], [])               # a pidfd becomes readable when its process ends
    finally:
        os.close(descriptor)


def stop_when_launcher_ends(signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process when its launcher ends, where a ``sh -c`` wrapper stands between them
    (``PR_SET_PDEATHSIG`` covers a direct parent)."""
    watched = launcher()
    if watched == os.getppid() or watched <= 1:
        return

    def watch() -> None:
        _wait_for_exit(watched)
        LOGGER.debug("process %d, which started this stage, has ended", watched)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _parents() -> dict[int, int]:
    """Every visible process id and its parent's, from /proc."""
    parents = {int(entry.name): _parent_of(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    return {pid: parent for pid, parent in parents.items() if parent}


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
    """On SIGTERM, SIGINT or SIGHUP (also sent when the launcher, e.g. ``dvc repro``, dies): kill every process
    this one started, run ``cleanup`` and exit with 128 + the signal's number, without another word written.
    A second signal while stopping is ignored: the first one's cleanup runs to its end."""
    def stop(signum: int, _frame: object) -> None:
        _on_stop_signals(signal.SIG_IGN)
        kill_tree(groups())
        try:
            cleanup()
        finally:
            LOGGER.error("stopped by %s: the stage's kernel and every process it started were killed; its partial "
                         "files were removed and no output was written", signal.Signals(signum).name)
            os._exit(128 + signum)

    _on_stop_signals(stop)
    die_with_parent(signal.SIGTERM)
    stop_when_launcher_ends(signal.SIGTERM)


def default_stop_signals() -> None:
    """Give SIGTERM, SIGINT and SIGHUP back their default actions (a stage that has finished has nothing to
    restore: a late signal ends the process without a word)."""
    _on_stop_signals(signal.SIG_DFL)


def _on_stop_signals(action: Callable[[int, Any], None] | signal.Handlers) -> None:
    """Set ``action`` (a handler, ``SIG_IGN`` or ``SIG_DFL``) for SIGTERM, SIGINT and SIGHUP."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, action)
