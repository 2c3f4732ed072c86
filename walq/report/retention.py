"""The retention window `walq status` shows.

* base backups known: found as `walq expire` finds them (walq.retention.discovery):
  walq's archived ``.backup`` files, read back through storage, and Barman's
  backup.info files in ``{home}/{server}``; a backup both describe is counted once,
  as Barman describes it, and a Barman backup counts only when DONE;
* oldest restorable point: the start of the oldest complete one of those backups
  (its WAL from start to stop archived), with the time it ended;
* newest restorable point: the watermark (the highest segment with nothing
  missing below it on the newest timeline) and when it was archived.

A backup description that cannot be read is not counted and is named in
``backup_problems``: status reports, it does not fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from walq.catalog import WalRecord
from walq.config import ServerConfig
from walq.errors import WalqError, clip
from walq.retention.backups import BackupParseError
from walq.retention.discovery import discover_backups, read_plain
from walq.storage import Storage, open_storage


class RestorePoint(TypedDict):
    wal: str
    time: float | None


class RetentionWindow(TypedDict):
    policy: str | None
    base_backups: int
    oldest_restorable: RestorePoint | None
    newest_restorable: RestorePoint | None
    expired: int
    backup_problems: list[str]


def retention_window(
    home: Path,
    server: ServerConfig,
    archived: list[WalRecord],
    watermark: str | None,
    expired: int,
    seg_size: int | None,
) -> RetentionWindow:
    by_name = {r.name: r for r in archived}
    opened: list[Storage] = []  # opened on the first .backup file: none, no storage client

    def read(name: str) -> bytes:
        try:
            if not opened:
                opened.append(open_storage(server))
            return read_plain(opened[0], server, by_name[name])
        except (WalqError, OSError) as exc:
            raise BackupParseError(f"{name}: cannot be read back: {clip(str(exc))}") from None

    found = discover_backups(home, server.name, by_name, read, seg_size)
    counted = [b for b in found.backups if b.done]
    oldest = next((b for b in counted if b.complete), None)
    oldest_time = None
    if oldest is not None:
        row = by_name.get(oldest.name)  # a .backup file's row: when it was written
        stamp = oldest.stop_time.timestamp() if oldest.stop_time else None
        oldest_time = stamp if stamp is not None else (row.mtime if row else None)
    newest = by_name.get(watermark) if watermark else None
    return {
        "policy": server.retention_policy,
        "base_backups": len(counted),
        "oldest_restorable": {"wal": oldest.start_wal, "time": oldest_time} if oldest else None,
        "newest_restorable": {"wal": newest.name, "time": newest.archived_at} if newest else None,
        "expired": expired,
        "backup_problems": list(found.problems),
    }
