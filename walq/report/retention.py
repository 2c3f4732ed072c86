"""The retention window `walq status` shows, from the catalog alone (no storage listing).

* base backups known: walq's archived ``.backup`` files (Barman's backup.info files
  are counted by `walq expire`, which reads them);
* oldest restorable point: the start of the oldest of those backups whose start
  segment is still archived, with the time its .backup file was written;
* newest restorable point: the watermark (the highest segment with nothing
  missing below it on the newest timeline) and when it was archived.
"""

from __future__ import annotations

from typing import TypedDict

from walq.catalog import WalRecord
from walq.config import ServerConfig
from walq.wal import WalKind, WalNameError, parse_wal_name


class RestorePoint(TypedDict):
    wal: str
    time: float | None


class RetentionWindow(TypedDict):
    policy: str | None
    base_backups: int
    oldest_restorable: RestorePoint | None
    newest_restorable: RestorePoint | None
    expired: int


def _is_backup(name: str) -> bool:
    try:
        return parse_wal_name(name).kind is WalKind.BACKUP
    except WalNameError:
        return False


def retention_window(
    server: ServerConfig, archived: list[WalRecord], watermark: str | None, expired: int
) -> RetentionWindow:
    by_name = {r.name: r for r in archived}
    backups = sorted(r for r in by_name if _is_backup(r))
    usable = [b for b in backups if b[:24] in by_name]
    oldest = by_name[usable[0]] if usable else None
    newest = by_name.get(watermark) if watermark else None
    return {
        "policy": server.retention_policy,
        "base_backups": len(backups),
        "oldest_restorable": {"wal": oldest.name[:24], "time": oldest.mtime} if oldest else None,
        "newest_restorable": {"wal": newest.name, "time": newest.archived_at} if newest else None,
        "expired": expired,
    }
