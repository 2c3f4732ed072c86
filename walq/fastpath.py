"""get-wal's spool hit without importing pydantic: PostgreSQL calls restore_command
once per WAL, so a prefetched WAL must cost little more than starting Python.

Only the common case is handled here (config from --config/WALQ_CONFIG/./walq.toml,
``home`` from the file or WALQ_HOME, default directories); anything unusual returns
None and the full CLI takes over with complete validation.
"""

from __future__ import annotations

import os
import re

_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


def spool_hit(argv: list[str]) -> int | None:
    """Serve ``get-wal SERVER WAL DEST`` from the restore spool; None if not applicable."""
    args = list(argv)
    config_path = os.environ.get("WALQ_CONFIG", "walq.toml")
    if len(args) >= 2 and args[0] == "--config":
        config_path = args[1]
        args = args[2:]
    elif args and args[0].startswith("--config="):
        config_path = args[0].split("=", 1)[1]
        args = args[1:]
    positional: list[str] = []
    skip_value = False
    for a in args:
        if skip_value:
            skip_value = False
        elif a == "--prefetch":
            skip_value = True
        elif not a.startswith("--"):
            positional.append(a)
    if len(positional) != 4 or positional[0] != "get-wal" or args[0] != "get-wal":
        return None
    _, server, wal, dest = positional
    if not _SERVER.match(server) or ".." in server or not _SEGMENT.match(wal):
        return None
    home = os.environ.get("WALQ_HOME")
    if home is None:
        import tomllib

        try:
            with open(config_path, "rb") as f:
                home = tomllib.load(f).get("home", "/var/lib/walq")
        except (OSError, ValueError):
            return None
    if not isinstance(home, str):
        return None
    spooled = os.path.join(home, "restore-spool", server, wal)
    try:
        os.rename(spooled, dest)
    except OSError:
        return None
    return 0
