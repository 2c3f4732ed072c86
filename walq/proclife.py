"""Child processes that die with the process that started them.

A child left behind by a killed parent keeps whatever it inherited (a lock,
a socket) and blocks forever on a pipe nobody reads: Linux's PR_SET_PDEATHSIG
has the kernel signal it when the parent goes. Cheap to import (os, signal,
ctypes only). Elsewhere than Linux these are no-ops.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def proc_start(pid: int) -> str | None:
    """The process start time in clock ticks (field 22 of /proc/PID/stat): guards against PID reuse."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def is_running(pid: int, start: str | None) -> bool:
    """``pid`` is alive and is the process that was recorded (same start time when known)."""
    now = proc_start(pid)
    return now is not None and (start is None or now == start)


def death_signal_setter(
    sig: signal.Signals, parent_pid: int | None = None
) -> Callable[[], None] | None:
    """A function asking the kernel to send ``sig`` to the calling process when its parent dies.

    The signal is only armed from the prctl call on: a parent that died
    before it (``parent_pid``, by default the process building this function)
    is no longer the caller's parent, and the caller exits at once instead.
    libc is loaded here, in the parent: as a preexec_fn the returned function
    makes two system calls between fork and exec. None where there is no prctl.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid() if parent_pid is None else parent_pid

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os._exit(1)

    return set_pdeathsig


def die_with_parent(parent_pid: int) -> None:
    """Process-pool initializer: SIGKILL this worker when ``parent_pid`` dies (or exit now if it has)."""
    setter = death_signal_setter(signal.SIGKILL, parent_pid)
    if setter is not None:
        setter()
