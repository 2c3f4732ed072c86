"""One server's base backups, found the same way by `walq expire` and `walq status`.

walq's own ``.backup`` files are read back through storage (decrypted,
decompressed) from the rows the catalog says are archived; Barman's backup.info
files come from the server directory ``{home}/{server}`` when a Barman server shares
the home. walq.retention.backups.known_backups merges the two (Barman's description
wins for one backup described twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from walq.catalog import WalRecord
from walq.config import ServerConfig
from walq.retention.backups import BackupDiscovery, known_backups, read_barman_backup_infos
from walq.storage import Storage, StoredObject
from walq.storage.readback import plain_chunks


def barman_server_dir(home: Path, server: str) -> Path:
    """Where a Barman server sharing walq's home keeps this server's backups."""
    return home / server


def stored_object(rec: WalRecord) -> StoredObject:
    """The object a catalog row says it stored."""
    return StoredObject(
        rec.name,
        rec.storage_key or "",
        rec.stored_size or 0,
        rec.codec,
        None if rec.encryption is None else rec.encryption == "gpg",
    )


def read_plain(storage: Storage, server: ServerConfig, rec: WalRecord) -> bytes:
    """A stored file's plain bytes (for the small text files: .backup, .history)."""
    return b"".join(
        plain_chunks(
            storage,
            stored_object(rec),
            server,
            codec=rec.codec,
            encrypted=rec.encryption == "gpg",
            limit=rec.size or None,
        )
    )


def discover_backups(
    home: Path,
    server: str,
    archived: Mapping[str, WalRecord],
    read: Callable[[str], bytes],
    seg_size: int | None,
) -> BackupDiscovery:
    """Every base backup the archived rows' .backup files and Barman's backup.info describe.
    ``read(name)`` gives an archived file's plain bytes."""
    infos = read_barman_backup_infos(str(barman_server_dir(home, server)))
    return known_backups(sorted(archived), read, infos, seg_size=seg_size)
