"""What waits for the archiver in a server's incoming/ and streaming/, and since when.

One helper for every place that measures the wait, so ``walq status``'s lag and
``walq check``'s ``archiver progress`` always agree:

- a file waits from the moment it was *published* in its directory: its ctime,
  set by the link or rename that put it there. Its mtime would not do: put-wal
  keeps the mtime PostgreSQL gave the segment, which can be hours older;
- the streaming/ file the scan leaves to pg_receivewal
  (walq.archive.scan.held_back) is still being written, not waiting;
- dot-files and ``*.tmp`` are work in progress (a writer's or walq's own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from walq.archive.scan import held_back
from walq.config import ServerConfig
from walq.wal import WalNameError, parse_wal_name


def list_pending(directory: Path) -> list[Path]:
    """The files a directory queues, sorted: dot-files and ``*.tmp`` are work in progress
    (a writer's or walq's own), not queued WAL. Raises OSError for a missing or unreadable one."""
    return sorted(
        Path(e.path)
        for e in os.scandir(directory)
        if not e.name.startswith(".") and not e.name.endswith(".tmp")
    )


@dataclass(frozen=True)
class Waiting:
    """The files waiting for the archiver in a server's incoming/ and streaming/."""

    count: int
    oldest_since: float | None  # when the longest-waiting one was published (ctime)

    def lag(self, now: float) -> float:
        """How long the longest-waiting file has waited, in seconds; 0 when nothing waits."""
        return 0.0 if self.oldest_since is None else max(now - self.oldest_since, 0.0)


def _listed(directory: Path) -> list[Path]:
    try:
        return list_pending(directory)
    except FileNotFoundError:  # not created yet: nothing waits there
        return []


def waiting(server: ServerConfig) -> Waiting:
    """What waits now; OSError when a directory exists but cannot be listed."""
    incoming = _listed(server.incoming_dir)
    streaming = _listed(server.streaming_dir)
    named = []
    for path in streaming:
        try:
            named.append((path.name, parse_wal_name(path.name).kind))
        except WalNameError:
            continue  # not a WAL: the scan parks it in errors/, so it waits like any file
    kept = held_back(named)
    since = []
    for path in incoming + [p for p in streaming if p.name != kept]:
        try:
            since.append(path.lstat().st_ctime)
        except FileNotFoundError:  # archived between the listing and now
            continue
    return Waiting(len(since), min(since, default=None))
