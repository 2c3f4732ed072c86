"""retry: put failed WALs back in play, once the operator has fixed the cause.

A failed row is made claimable again. If its file was parked in errors/, it is
moved back into incoming/ under its WAL name (never over an existing file).
In embedded mode the server is then archived at once; in fleet mode the next
scan (or walq.retry_wal) picks it up.
"""

from __future__ import annotations

import os
from pathlib import Path

from walq.catalog import WalState, open_catalog
from walq.config import Config
from walq.fsutil import fsync_dir
from walq.wal import parse_wal_name


def restore_parked_file(
    errors_dir: Path, incoming_dir: Path, name: str, parked: str | None
) -> bool:
    """Move a parked copy of ``name`` from errors/ back into incoming/ (True if moved)."""
    target = incoming_dir / name
    if target.exists():
        return False
    candidates = []
    if parked and Path(parked).parent == errors_dir and Path(parked).name.startswith(name + "."):
        candidates.append(Path(parked))
    if not candidates:
        return False
    src = candidates[0]
    if not src.is_file() or src.is_symlink():
        return False
    try:
        os.link(src, target)
    except FileExistsError:
        return False
    os.unlink(src)
    fsync_dir(incoming_dir)
    fsync_dir(errors_dir)
    return True


def reset_failed(config: Config, server_name: str, names: list[str] | None) -> list[str]:
    server = config.server(server_name)
    for name in names or []:
        parse_wal_name(name)
    catalog = open_catalog(config)
    try:
        parked = {r.name: r.source_path for r in catalog.records(server.name, WalState.FAILED)}
        reset = catalog.reset_failed(server.name, names)
        for name in reset:
            restore_parked_file(server.errors_dir, server.incoming_dir, name, parked.get(name))
    finally:
        catalog.close()
    return reset


def retry(config: Config, server_name: str, names: list[str] | None):
    """Reset failed WALs; in embedded mode archive the server right away."""
    reset = reset_failed(config, server_name, names)
    if config.fleet:
        return reset, None
    # The in-process runner (process pool, locks) only when embedded mode runs it:
    # fleet workers import this module for reset_failed.
    from walq.archive.embedded import archive

    return reset, archive(config, [server_name])
