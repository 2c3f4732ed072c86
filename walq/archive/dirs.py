"""The directories a server needs before anything is scanned, in both modes."""

from __future__ import annotations

from walq.config import Config, ServerConfig
from walq.errors import WalqError
from walq.fsutil import incoming_mode, makedirs_durable


def ensure_server_dirs(
    config: Config, server: ServerConfig, error: type[WalqError], *, with_storage: bool
) -> None:
    """Create the source, errors and spool dirs (and the local archive when
    ``with_storage``); a failure raises ``error`` naming the config key.

    Embedded mode raises ConfigError (the operator's run stops) and creates the
    local archive too; the fleet's scan raises TransientError (the next scan
    tries again) and leaves storage to the store stage, so an unwritable
    archive fails that WAL's store, visibly, not every scan."""
    wanted = {
        "incoming_dir": server.incoming_dir,
        "streaming_dir": server.streaming_dir,
        "errors_dir": server.errors_dir,
        "spool_dir": config.spool_dir,
    }
    if with_storage and server.local_wals_dir is not None:
        wanted["storage_url"] = server.local_wals_dir
    for key, path in wanted.items():
        try:
            makedirs_durable(path, incoming_mode() if key == "incoming_dir" else None)
        except OSError as exc:
            raise error(
                f"servers.{server.name}.{key}: cannot create {path}: {exc.strerror}"
            ) from None
