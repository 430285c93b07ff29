"""Keep native libraries' start-up notes off the terminal.

TensorFlow's C++ code writes "oneDNN custom operations are on" and similar notes to file
descriptor 2 before its logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot silence them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (write nothing of your own meanwhile)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
