"""What the archive hooks are told about a WAL, in both modes (walq.hooks runs them).

Pre hooks see the source file (BARMAN_FILE its path in incoming/ or streaming/,
its size, mtime and the codec its producer used, if any); post hooks see the
archived copy as the catalog recorded it (BARMAN_FILE the path under wals/, or
``s3://bucket/key``; the stored size; the codec), or, when nothing was archived,
where it would have gone with the source's size, as Barman's do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from walq.catalog.base import Catalog
from walq.codecs import DETECT_BYTES, detect
from walq.config import HOOK_SCRIPTS, Config, ServerConfig
from walq.storage.base import Storage

if TYPE_CHECKING:
    from walq.archive.steps import Outcome
    from walq.hooks import HookKind, WalHookInfo, WalHooks


def configured_hooks(
    config: Config,
    server: ServerConfig,
    kind: HookKind,
    heartbeat: Callable[[], None] | None = None,
) -> WalHooks | None:
    """The server's hooks of this kind (``archive`` or ``wal_delete``), or None, with
    nothing imported, when none of them is configured."""
    if not any(getattr(server, key) for key in HOOK_SCRIPTS if kind_of(key) == kind):
        return None
    from walq.hooks import WalHooks

    return WalHooks(config, server, kind, heartbeat)


def kind_of(script_key: str) -> HookKind:
    """``wal_delete`` for the four WAL delete keys, ``archive`` for the others."""
    return "wal_delete" if "wal_delete" in script_key else "archive"


def archive_hooks(
    config: Config, server: ServerConfig, heartbeat: Callable[[], None] | None = None
) -> WalHooks | None:
    """The server's archive hooks, or None when none is configured."""
    return configured_hooks(config, server, "archive", heartbeat)


def source_info(name: str, source: str) -> WalHookInfo:
    """The pre hooks' view: the file as it waits in incoming/ or streaming/."""
    from walq.hooks import WalHookInfo

    try:
        st = os.lstat(source)
        with open(source, "rb") as fh:  # only the magic bytes: the producer's codec, if any
            codec = detect(fh.read(DETECT_BYTES)) or ""
    except OSError:
        return WalHookInfo(name, source, 0, 0.0, "")
    return WalHookInfo(name, source, st.st_size, st.st_mtime, codec)


def location(storage: Storage, key: str) -> str:
    """Where an object is, as a path (local storage) or an ``s3://bucket/key`` URL."""
    root = getattr(storage, "root", None)
    if root is not None:
        return os.path.join(str(root), key)
    return f"s3://{getattr(storage, 'bucket', '')}/{key}"


def expected_key(storage: Storage, server: ServerConfig, name: str) -> str:
    """The key a WAL gets with this server's settings (for a WAL that was not stored)."""
    if getattr(storage, "root", None) is not None:
        return storage.key_for(name)  # type: ignore[attr-defined]
    return storage.key_for(name, server.compression, server.encryption == "gpg")  # type: ignore[attr-defined]


def stored_hook_info(
    catalog: Catalog, storage: Storage, server: ServerConfig, before: WalHookInfo
) -> WalHookInfo:
    """The post hooks' view: the stored copy the catalog records, else the would-be one."""
    from walq.hooks import WalHookInfo

    rec = catalog.get(server.name, before.segment)
    if rec is not None and rec.storage_key:
        return WalHookInfo(
            before.segment,
            location(storage, rec.storage_key),
            rec.stored_size or 0,
            rec.mtime if rec.mtime is not None else before.timestamp,
            "" if rec.codec in (None, "none") else str(rec.codec),
        )
    where = location(storage, expected_key(storage, server, before.segment))
    return WalHookInfo(before.segment, where, before.size, before.timestamp, before.compression)


def outcome_error(outcome: Outcome) -> str | None:
    """BARMAN_ERROR for a settled WAL: empty when archived, else what happened to it."""
    if outcome.status == "archived":
        return None
    return f"{outcome.status}: {outcome.message}" if outcome.message else outcome.status
