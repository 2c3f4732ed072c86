"""Scratch directories for tests that real services and the postgres OS user can enter.

They live under /tmp/walq-tests (``WALQ_TEST_BASE``), world-traversable, because
clusters and archive/restore commands run as ``postgres``, who cannot enter
pytest's private tmp_path.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

BASE = Path(os.environ.get("WALQ_TEST_BASE", "/tmp/walq-tests"))


def scratch_base() -> Path:
    """BASE, created if need be and world-traversable."""
    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    return BASE


def fresh_dir(prefix: str) -> Path:
    """A new, empty, world-traversable directory under BASE (the caller removes it)."""
    path = scratch_base() / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    os.chmod(path, 0o755)
    return path
