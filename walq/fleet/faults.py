"""The test-only fault hook: freeze a worker at a named stage (WALQ_FAULT_DIR)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def fault_point(stage: str) -> None:
    """Tests only (WALQ_FAULT_DIR): freeze this process at ``stage`` once, with a real SIGSTOP.

    A real part cannot be told "stop exactly between store and commit", so the
    first process reaching a stage named by a file in the fault directory writes
    its pid and stops itself; the test then SIGKILLs or SIGCONTs that pid."""
    fault_dir = os.environ.get("WALQ_FAULT_DIR")
    if not fault_dir:
        return
    trigger = Path(fault_dir) / stage
    taken = Path(fault_dir) / f"{stage}.taken"
    try:
        os.rename(trigger, taken)  # exactly one process wins
    except FileNotFoundError:
        return
    tmp = Path(fault_dir) / f".{stage}.pid"
    tmp.write_text(str(os.getpid()))
    os.rename(tmp, Path(fault_dir) / f"{stage}.pid")
    os.kill(os.getpid(), signal.SIGSTOP)
