"""``walq switch-wal --archive``: wait until one WAL is archived, as Barman's option does.

Barman's ``switch-wal --archive`` does not only watch: while it waits it runs
its own archiver (``archive_wal``) on what has arrived, so the command works
without cron. walq does the same in embedded mode: whenever files wait in the
server's incoming/ or streaming/ it archives them in this process (no pool: a
handful of files, and no process start-up per poll), under the same
archive-wal lock as ``walq archive``, so a cron run already at work simply
makes this one skip and watch. In fleet mode the workers archive; this only
watches the catalog.

Done when the catalog's row for the WAL is ``archived`` (or ``expired``:
it was archived, then retention removed it); a ``failed`` row ends the wait at
once with its reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from walq.catalog import Catalog, WalState, open_catalog
from walq.config import Config, ServerConfig
from walq.report.waiting import Waiting, waiting

POLL_SECONDS = 0.2  # PostgreSQL's archiver hands a closed segment over within a second or so


@dataclass(frozen=True)
class WaitResult:
    ok: bool
    message: str


def _pending(server: ServerConfig) -> Waiting | None:
    """What waits now (None: nothing); a directory that cannot be listed counts as something,
    so that the archiver says what is wrong with it."""
    try:
        queue = waiting(server)
    except OSError:
        return Waiting(-1, None)
    return queue if queue.count else None


def _settled(catalog: Catalog, server: ServerConfig, name: str) -> WaitResult | None:
    row = catalog.get(server.name, name)
    if row is None or row.state is WalState.CLAIMED:
        return None
    if row.state is WalState.FAILED:
        return WaitResult(
            False,
            f"the WAL file {name} failed to archive: {row.last_error or 'no reason recorded'} "
            "(walq list --failed, walq retry)",
        )
    return WaitResult(True, f"The WAL file {name} has been archived for server '{server.name}'")


def wait_archived(
    config: Config, server: ServerConfig, name: str, timeout: float | None
) -> WaitResult:
    """Wait until ``name`` is archived for ``server``; ``timeout`` None waits for ever."""
    from walq.archive.embedded import archive_server

    deadline = None if timeout is None else time.monotonic() + timeout
    left_behind: Waiting | None = None  # what our last archive run could not settle
    catalog = open_catalog(config)
    try:
        while True:
            settled = _settled(catalog, server, name)
            pending = None if config.fleet or settled else _pending(server)
            if pending is not None and pending != left_behind:
                archive_server(config, server, pool=None)  # busy: a running walq archive works
                left_behind = _pending(server)
                settled = _settled(catalog, server, name)
            if settled is not None:
                return settled
            if deadline is not None and time.monotonic() >= deadline:
                return WaitResult(
                    False,
                    f"the WAL file {name} has not been archived within {timeout:g} seconds "
                    "(is archive_command delivering it, and walq archive or the fleet running?)",
                )
            time.sleep(POLL_SECONDS)
    finally:
        catalog.close()
