"""Barman from its own test venvs (scripts/barman-venv.sh), never walq's environment.

Every test that runs the current Barman (``barman``, ``barman-cloud-wal-restore``) shares
one venv, ``.venv-barman``: a clean clone builds it once. Older versions, which only
tests/test_barman_codecs.py needs, get a venv each.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CURRENT = "3.19.1"  # scripts/barman-venv.sh's default; the version wal-reference.md describes


@functools.cache
def barman_bin(version: str = CURRENT) -> Path:
    """The bin/ directory of a venv holding Barman ``version`` with its cloud extras."""
    env = dict(os.environ)
    if version != CURRENT:
        env["WALQ_BARMAN_VENV"] = f".venv-barman-{version}"
        env["WALQ_BARMAN_SPEC"] = f"barman[cloud,snappy,zstandard,lz4]=={version}"
    res = subprocess.run(
        [str(REPO / "scripts" / "barman-venv.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert res.returncode == 0, f"scripts/barman-venv.sh failed:\n{res.stderr[-2000:]}"
    return Path(res.stdout.strip().splitlines()[-1]).parent


def barman_of(version: str = CURRENT) -> Path:
    """The ``barman`` command of Barman ``version``."""
    return barman_bin(version) / "barman"
