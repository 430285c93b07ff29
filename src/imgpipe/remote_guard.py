"""Make DVC's SSH remote check host keys and keep the SSH agent at home.

dvc-ssh 4.3 connects through sshfs and asyncssh with ``known_hosts=None`` (any host key is accepted:
a server that impersonates the remote gets the upload and serves the download) and
``agent_forwarding=True`` (the server may use the user's SSH agent to log in elsewhere), and DVC's
configuration has no key to change either. This module changes both for every ``dvc`` command run with
this project's environment: host keys are checked against OpenSSH's known-hosts files
(``~/.ssh/known_hosts``, or ``UserKnownHostsFile`` in ``~/.ssh/config``), and the agent is not forwarded.

It is loaded by a one-line ``.pth`` file that ``make env`` puts into the environment's site-packages
(``imgpipe-remote-guard.pth``), and it does nothing until ``dvc_ssh`` itself is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = "dvc_ssh"
PTH_NAME = "imgpipe-remote-guard.pth"
# Silent where imgpipe (or this module) is not importable, e.g. another checkout first on PYTHONPATH.
PTH_LINE = ('import importlib.util as u; u.find_spec("imgpipe") and u.find_spec("imgpipe.remote_guard") and '
            '__import__("imgpipe.remote_guard").remote_guard.install()\n')


def harden(login_info: dict[str, Any]) -> dict[str, Any]:
    """asyncssh connection options with host-key checking on (``()`` = OpenSSH's known-hosts files) and no
    agent forwarding."""
    return {**login_info, "known_hosts": (), "agent_forwarding": False}


def patch(module: ModuleType) -> None:
    """Wrap ``dvc_ssh.SSHFileSystem._prepare_credentials`` with :func:`harden` (once)."""
    filesystem = module.SSHFileSystem
    original = filesystem._prepare_credentials
    if getattr(original, "imgpipe_hardened", False):
        return

    def prepare_credentials(self: Any, **config: Any) -> dict[str, Any]:
        return harden(original(self, **config))

    prepare_credentials.imgpipe_hardened = True  # type: ignore[attr-defined]
    filesystem._prepare_credentials = prepare_credentials


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``dvc_ssh`` through the normal machinery, then patches it right after it is executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        patch(module)


def install() -> None:
    """Patch ``dvc_ssh`` now if it is loaded, else when it is imported."""
    if TARGET in sys.modules:
        patch(sys.modules[TARGET])
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def write_pth() -> Path:
    """Put the one-line ``.pth`` file that loads this guard into this environment's site-packages."""
    target = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE)
    return target
