"""get-wal's spool hit: serve a prefetched WAL with a rename, before the full CLI loads.

PostgreSQL calls restore_command once per WAL, so a prefetched WAL must cost little
more than starting Python: this module imports only what the interpreter has
already loaded (os, sys) plus walq.restore.spool (fcntl, time), and never
pydantic, argparse or boto3. walq.main tries it first.

Only the common case is handled here (config from --config/WALQ_CONFIG/./walq.toml,
``home`` from the file or WALQ_HOME, default directories); anything unusual returns
None and the full CLI takes over with complete validation. On a hit with
``--prefetch N`` it makes sure a prefetcher (walq.restore.prefetch) is refilling the spool.
"""

# no `from __future__ import annotations`: one import fewer per restore_command call
import os
import sys

from walq.config_scan import DEFAULT_HOME, is_server_name, read_text, scan_toml
from walq.config_scan import config_path as path_of_config
from walq.restore.spool import END_NAME, detach, parse_prefetch, running_pid, wait_for_inflight

_HEX_UPPER = frozenset("0123456789ABCDEF")


def _is_segment_name(s: str) -> bool:
    return len(s) == 24 and set(s) <= _HEX_UPPER


def _is_replaceable(dest: str) -> bool:
    """A DEST a rename may replace: absent or a regular file; never '-' (standard
    output), a symlink (/dev/stdout), a device or a directory. The full CLI explains."""
    if dest == "-":
        return False
    try:
        mode = os.lstat(dest).st_mode
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return mode & 0o170000 == 0o100000  # S_ISREG without importing stat


def spool_hit(argv: list[str]) -> int | None:
    """Serve ``get-wal SERVER WAL DEST`` from the restore spool; None if not applicable."""
    args = list(argv)
    explicit_config: str | None = None
    if len(args) >= 2 and args[0] == "--config":
        explicit_config = args[1]
        args = args[2:]
    elif args and args[0].startswith("--config="):
        explicit_config = args[0].split("=", 1)[1]
        args = args[1:]
    config_path = path_of_config(explicit_config)
    positional: list[str] = []
    prefetch = 0
    i = 0
    while i < len(args):
        a = args[i]
        if (a == "--prefetch" and i + 1 < len(args)) or a.startswith("--prefetch="):
            if a == "--prefetch":
                i += 1
                value = args[i]
            else:
                value = a.split("=", 1)[1]
            try:
                prefetch = parse_prefetch(value)
            except ValueError:
                return None  # out of bounds: the full CLI refuses it with one line
        elif a in ("--partial", "-P"):
            pass  # a spooled segment is archived and complete: the flag changes nothing here
        elif a.startswith("-"):
            return None
        else:
            positional.append(a)
        i += 1
    if len(positional) != 4 or positional[0] != "get-wal" or not args or args[0] != "get-wal":
        return None
    _, server, wal, dest = positional
    if not is_server_name(server) or not _is_segment_name(wal) or not _is_replaceable(dest):
        return None
    home = os.environ.get("WALQ_HOME") or _home_from_config(config_path)
    if home is None or not os.path.isabs(home):
        return None  # the full CLI refuses a relative home with one line
    spool = os.path.join(home, "restore-spool", server)
    try:
        os.rename(os.path.join(spool, wal), dest)
    except OSError:
        if not (prefetch > 0 and wait_for_inflight(spool, wal)):
            return None
        try:
            os.rename(os.path.join(spool, wal), dest)
        except OSError:
            return None
    if prefetch > 0:
        _keep_prefetching(spool, os.path.abspath(config_path), server, wal, prefetch)
    return 0


def _home_from_config(path: str) -> str | None:
    """``home`` from the config file, without importing tomllib (its import costs more
    than the whole rest of a spool hit); the real parser where the file is unusual."""
    text = read_text(path)
    if text is None:
        return None
    home = simple_toml_home(text)
    if home is None:
        import tomllib

        try:
            value = tomllib.loads(text).get("home", DEFAULT_HOME)
        except ValueError:
            return None
        home = value if isinstance(value, str) else None
    return home


_HOME = frozenset({("", "home")})


def simple_toml_home(text: str) -> str | None:
    """The top-level ``home`` of a plain TOML file, or None to let tomllib decide
    (walq.config_scan's conservative scan, shared with put-wal's fast path)."""
    scanned = scan_toml(text, _HOME)
    if scanned is None:
        return None
    home = scanned[0].get(("", "home"), DEFAULT_HOME)
    return home if isinstance(home, str) else None


def _keep_prefetching(spool: str, config_path: str, server: str, wal: str, count: int) -> None:
    """Start ``python -m walq.restore.prefetch`` detached unless one runs or the archive's end was reached.

    Rare: the prefetcher forked by the last archive fetch normally outlives the
    whole restore; this covers one that exited idle while recovery was paused.
    """
    if os.path.exists(os.path.join(spool, END_NAME)) or running_pid(spool) is not None:
        return
    if detach(spool):
        try:
            os.execv(
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "walq.restore.prefetch",
                    "--config",
                    config_path,
                    server,
                    wal,
                    str(count),
                ],
            )
        finally:
            os._exit(1)
