"""put-wal's fast path: archive_command's common case without the config model.

PostgreSQL's archiver runs archive_command once per segment, one at a time, so
put-wal's start-up is on the database's critical path: importing pydantic and
pydantic-settings cost ten times the copy. walq.main tries this before the full
CLI. It reads the three values put-wal needs (``home``, ``group_access``, the
server's ``incoming_dir``) with walq.config_scan's conservative scan, then runs
the very same ``land_wal`` as the full path: name, size, identical-or-different
duplicate, fsync, atomic publish, private modes.

Anything it cannot decide returns None and the full CLI does the whole call
again with complete validation: an unusual config file or argument, a WALQ_*
variable that would set one of those keys, a segment without a usable page
header (the catalog knows its size), and every error, so error lines and exit
codes are the full CLI's own. A refused call leaves nothing behind, so the
second run starts from the same state. The rest of the file is not validated
here: a mistake in a key put-wal does not read is reported by every other
command (``walq check`` first), while archive_command keeps landing WAL safely.
"""

# no `from __future__ import annotations`: one import fewer per archive_command call
import os

from walq.config_scan import (
    DEFAULT_HOME,
    config_path,
    env_overrides,
    is_server_name,
    read_text,
    scan_toml,
)

_READS = frozenset({"home", "group_access", "servers"})  # the top-level keys it reads


class _Undecided(Exception):
    """The fast path cannot answer exactly as the full CLI would."""


def _undecided() -> int:
    raise _Undecided


def put_wal_fast(argv: list[str]) -> int | None:
    """Serve ``[--config FILE] put-wal SERVER PATH``: 0 once the WAL is in incoming/
    (stored now or already there, identical); None for the full CLI to decide."""
    args = list(argv)
    explicit: str | None = None
    if len(args) >= 2 and args[0] == "--config":
        explicit, args = args[1], args[2:]
    elif args and args[0].startswith("--config="):
        explicit, args = args[0].split("=", 1)[1], args[1:]
    if len(args) != 3 or args[0] != "put-wal" or any(a.startswith("-") for a in args):
        return None
    _, server, source = args
    if not is_server_name(server) or not source or "\0" in source or env_overrides(_READS):
        return None
    settings = _settings(config_path(explicit), server)
    if settings is None:
        return None
    incoming, group_access = settings
    # imported only now: a call this path will not serve pays nothing for them. Neither
    # imports pathlib, re, enum, dataclasses or typing (tests/test_putwal_fast.py)
    from walq.archive.putwal import land_wal
    from walq.errors import WalqError
    from walq.fsutil import set_group_access

    set_group_access(group_access)
    try:
        land_wal(incoming, server, source, _undecided)
    except (_Undecided, WalqError, OSError):
        return None
    return 0


def _settings(path: str, server: str) -> tuple[str, bool] | None:
    """(the server's incoming_dir, group_access) as the config model would resolve them,
    or None where the scan abstains or the model might say otherwise."""
    text = read_text(path)
    if text is None:
        return None
    table = f"servers.{server}"
    wanted = frozenset({("", "home"), ("", "group_access"), (table, "incoming_dir")})
    scanned = scan_toml(text, wanted)
    if scanned is None:
        return None
    values, headers = scanned
    if table not in headers:
        return None  # unknown server, or one defined some other way: the full CLI says
    home = os.environ["WALQ_HOME"] if "WALQ_HOME" in os.environ else values.get(("", "home"))
    home = DEFAULT_HOME if home is None else home
    incoming = values.get((table, "incoming_dir"))
    if incoming is None and isinstance(home, str):
        incoming = os.path.join(home, server, "incoming")
    group_access = values.get(("", "group_access"), False)
    if (
        not isinstance(home, str)
        or not os.path.isabs(home)
        or not isinstance(incoming, str)
        or not os.path.isabs(incoming)
        or not isinstance(group_access, bool)
    ):
        return None
    return incoming, group_access
