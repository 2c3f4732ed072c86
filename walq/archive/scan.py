"""Enumerate a server's incoming/ and streaming/ directories the way Barman does.

Rules (wal-reference.md 3.5 and 9): dot-files are invisible, ``.tmp`` files
stay, the batch limit cuts the sorted listing before filtering, anything that
is not a regular file with a WAL name goes to errors/ as ``unknown`` (symlinks
included, and never followed), and streaming/ always keeps its newest file
back for pg_receivewal. Streaming files come first, so when the same WAL sits
in both directories the streamed copy is archived and the other deduplicated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from walq.config import ServerConfig
from walq.fsutil import fsync_dir, make_private, makedirs_durable
from walq.wal import WalKind, WalNameError, parse_wal_name


@dataclass(frozen=True, slots=True)
class Candidate:
    """A WAL file found in a source directory, ready to be archived."""

    name: str
    path: Path
    origin: str  # 'streaming' | 'incoming'
    kind: WalKind


@dataclass
class Batch:
    wals: list[Candidate] = field(default_factory=list)
    unknown: list[Path] = field(default_factory=list)  # already moved to errors/
    skipped: list[str] = field(default_factory=list)  # .tmp files and held-back streaming files
    total: int = 0  # files seen before the batch cut


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    try:
        entries = [e for e in os.scandir(directory) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda e: e.name)
    return entries


def error_path(errors_dir: Path, name: str, suffix: str) -> Path:
    """``<name>.<UTC stamp>.<suffix>``; a counter keeps two in one second apart."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = errors_dir / f"{name}.{stamp}.{suffix}"
    n = 1
    while target.exists() or target.is_symlink():
        target = errors_dir / f"{name}.{stamp}-{n}.{suffix}"
        n += 1
    return target


def move_to_errors(path: Path, errors_dir: Path, suffix: str) -> Path:
    """Move (never copy) a file or symlink into errors/, creating it if needed."""
    makedirs_durable(errors_dir)
    target = error_path(errors_dir, path.name, suffix)
    os.rename(path, target)
    make_private(target)  # WAL in errors/ is as private as in the archive (symlinks untouched)
    fsync_dir(errors_dir)
    fsync_dir(path.parent)
    return target


def _classify(
    entries: list[os.DirEntry[str]], origin: str, errors_dir: Path, batch: Batch
) -> list[Candidate]:
    found: list[Candidate] = []
    for entry in entries:
        if entry.name.endswith(".tmp"):
            batch.skipped.append(entry.name)
            continue
        try:
            wal = parse_wal_name(entry.name)
            regular = entry.is_file(follow_symlinks=False)
        except WalNameError:
            wal, regular = None, False
        except FileNotFoundError:
            continue  # vanished between listing and stat
        if wal is None or not regular:
            try:
                batch.unknown.append(move_to_errors(Path(entry.path), errors_dir, "unknown"))
            except FileNotFoundError:
                continue
            continue
        found.append(Candidate(entry.name, Path(entry.path), origin, wal.kind))
    return found


def held_back(streamed: Sequence[tuple[str, WalKind]]) -> str | None:
    """The streaming/ file left to pg_receivewal, from (name, kind) pairs in name order:
    the newest .partial, or the newest complete segment when there is none."""
    for kind in (WalKind.PARTIAL, WalKind.SEGMENT):
        names = [name for name, k in streamed if k is kind]
        if names:
            return names[-1]
    return None


def _keep_last(streamed: list[Candidate], batch: Batch) -> list[Candidate]:
    held = held_back([(c.name, c.kind) for c in streamed])
    if held is None:
        return streamed
    batch.skipped.append(held)
    return [c for c in streamed if c.name != held]


def scan(server: ServerConfig) -> Batch:
    """List, classify and sort one server's pending WAL; unknown files go to errors/."""
    batch = Batch()
    streaming = _listing(server.streaming_dir)
    incoming = _listing(server.incoming_dir)
    batch.total = len(streaming) + len(incoming)
    if server.batch_size:
        streaming = streaming[: server.batch_size]
        incoming = incoming[: server.batch_size]
    streamed = _keep_last(_classify(streaming, "streaming", server.errors_dir, batch), batch)
    received = _classify(incoming, "incoming", server.errors_dir, batch)
    # Merge in WAL order; on equal names the streamed copy goes first.
    order = {"streaming": 0, "incoming": 1}
    batch.wals = sorted(streamed + received, key=lambda c: (c.name, order[c.origin]))
    return batch
