"""Durable file-system primitives: fsync of files and directories, atomic publish."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path, mode: int = 0o750) -> None:
    """Create missing directories and fsync each new one's parent."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def link_no_replace(src: Path, dst: Path) -> None:
    """Publish src at dst; FileExistsError if dst exists (never overwrites)."""
    os.link(src, dst)


def copy_file(src: Path, dst_fd: int) -> None:
    with open(src, "rb") as fin, os.fdopen(os.dup(dst_fd), "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
