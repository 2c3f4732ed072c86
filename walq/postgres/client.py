"""Talking to the archived PostgreSQL server (psycopg 3): facts, slots, switch-wal.

Everything here is read-mostly and short-lived: one connection per call, a
short connect timeout, autocommit. Failures surface as ``PostgresError`` (a
TransientError: the server may come back) whose message never contains a
password (walq.masking hides secrets, here through ``mask_conninfo``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from walq.archive.identity import adopt_identity
from walq.catalog import Catalog
from walq.config import ServerConfig
from walq.errors import ConfigError, PostgresError
from walq.masking import mask_library_logs, mask_secrets, url_passwords

if (
    TYPE_CHECKING
):  # psycopg is imported on first connection: a server without conninfo never loads it
    from psycopg import Connection

mask_library_logs("psycopg")  # its debug lines quote libpq's errors, which may quote the conninfo
CONNECT_TIMEOUT = 5  # seconds; checks and status must not hang on a dead server
APPLICATION_NAME = "walq"


def mask_conninfo(text: str) -> str:
    """Hide passwords in key=value and URI conninfo strings (and in messages quoting them)."""
    return mask_secrets(text)


def default_slot_name(server: str) -> str:
    """``walq_<server>``, lower-cased, anything outside [0-9a-z_] replaced (PostgreSQL's rule)."""
    return re.sub(r"[^0-9a-z_]", "_", f"walq_{server}".lower())[:63]


def slot_name(server: ServerConfig) -> str:
    return server.slot_name or default_slot_name(server.name)


def require_conninfo(server: ServerConfig) -> str:
    if not server.conninfo:
        raise ConfigError(
            f"servers.{server.name}.conninfo is not set (needed to talk to PostgreSQL)"
        )
    return server.conninfo


def connect(server: ServerConfig, timeout: int = CONNECT_TIMEOUT) -> Connection[Any]:
    import psycopg  # lazily: see TYPE_CHECKING above

    conninfo = require_conninfo(server)
    try:
        return psycopg.connect(
            conninfo, autocommit=True, connect_timeout=timeout, application_name=APPLICATION_NAME
        )
    except psycopg.Error as exc:
        reason = mask_secrets(_first_line(exc), *url_passwords(conninfo))
        raise PostgresError(f"{server.name}: cannot connect to PostgreSQL: {reason}") from None


def _first_line(exc: BaseException) -> str:
    """The first line of a psycopg error, passwords masked (libpq quotes conninfo in some errors)."""
    text = str(exc).strip()
    return mask_secrets(text.splitlines()[0]) if text else type(exc).__name__


@contextmanager
def session(server: ServerConfig, failed: str = "") -> Iterator[Connection[Any]]:
    """A connection whose query errors surface as one ``PostgresError`` line:
    ``<server>: <failed><first line of the error>``."""
    import psycopg

    with connect(server) as conn:
        try:
            yield conn
        except psycopg.Error as exc:
            raise PostgresError(f"{server.name}: {failed}{_first_line(exc)}") from None


def one_row(
    conn: Connection[Any], query: str, params: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    """The first row of a query that always returns one (a SELECT of functions, no FROM filter)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


# SQL pieces more than one query here and in the receiver use
SEGMENT_SIZE_SQL = "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
CURRENT_POSITION_SQL = "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"


@dataclass
class SlotInfo:
    name: str
    slot_type: str
    active: bool
    active_pid: int | None
    restart_lsn: str | None
    wal_status: str | None
    retained_bytes: int | None  # current LSN - restart_lsn: WAL the slot keeps on the server


@dataclass
class ArchiverStats:
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: float | None

    @property
    def failing(self) -> bool:
        """The most recent archive_command attempt failed (older failures that healed do not count)."""
        if not self.last_failed_time:
            return False
        return not self.last_archived_time or self.last_failed_time >= self.last_archived_time


@dataclass
class PgInfo:
    """What walq needs to know about one server, read in one connection."""

    version_num: int
    version: str
    system_identifier: int
    wal_segment_size: int
    archive_mode: str
    archive_command: str
    in_recovery: bool
    current_lsn: str
    current_wal: str | None
    archiver: ArchiverStats
    slots: list[SlotInfo] = field(default_factory=list)
    replication_lag_bytes: int | None = (
        None  # for the walq slot's active connection (flush position)
    )
    synchronous_standby_names: str = ""
    # pg_stat_replication's sync_state/sync_priority of the walq slot's active connection
    receiver_sync_state: str | None = None
    receiver_sync_priority: int | None = None

    def slot(self, name: str) -> SlotInfo | None:
        return next((s for s in self.slots if s.name == name), None)


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def fetch_info(server: ServerConfig) -> PgInfo:
    """Read version, identity, archiving settings, archiver stats, slots and WAL position."""
    with session(server, "query failed: ") as conn:
        return _fetch(conn, slot_name(server))


def _fetch(conn: Connection[Any], walq_slot: str) -> PgInfo:
    (
        version_num,
        version,
        sysid,
        seg_size,
        archive_mode,
        archive_command,
        in_recovery,
        sync_names,
    ) = one_row(
        conn,
        f"""
        SELECT current_setting('server_version_num')::int,
               current_setting('server_version'),
               (SELECT system_identifier FROM pg_control_system()),
               {SEGMENT_SIZE_SQL},
               current_setting('archive_mode'),
               current_setting('archive_command'),
               pg_is_in_recovery(),
               current_setting('synchronous_standby_names')
        """,
    )
    if in_recovery:
        lsn = one_row(
            conn, "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"
        )[0]
        wal = None  # pg_walfile_name() is refused during recovery
    else:
        lsn, wal = one_row(conn, CURRENT_POSITION_SQL)
    arch = one_row(
        conn,
        "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
        "last_failed_wal, last_failed_time FROM pg_stat_archiver",
    )
    rows = conn.execute(
        "SELECT slot_name::text, slot_type, active, active_pid, restart_lsn::text, wal_status, "
        "pg_wal_lsn_diff(%s::pg_lsn, restart_lsn)::bigint FROM pg_replication_slots ORDER BY slot_name",
        (lsn,),
    ).fetchall()
    slots = [SlotInfo(*row) for row in rows]
    lag = sync_state = sync_priority = None
    mine = next((s for s in slots if s.name == walq_slot and s.active_pid), None)
    if mine is not None and lsn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, flush_lsn)::bigint, sync_state, sync_priority "
            "FROM pg_stat_replication WHERE pid = %s",
            (lsn, mine.active_pid),
        ).fetchone()
        if row:
            lag, sync_state, sync_priority = row
    return PgInfo(
        version_num=version_num,
        version=version,
        system_identifier=int(sysid),
        wal_segment_size=int(seg_size),
        archive_mode=archive_mode,
        archive_command=archive_command,
        in_recovery=in_recovery,
        current_lsn=lsn,
        current_wal=wal,
        archiver=ArchiverStats(arch[0], arch[1], _ts(arch[2]), arch[3], arch[4], _ts(arch[5])),
        slots=slots,
        replication_lag_bytes=lag,
        synchronous_standby_names=sync_names or "",
        receiver_sync_state=sync_state,
        receiver_sync_priority=sync_priority,
    )


def current_position(server: ServerConfig) -> tuple[str, str]:
    """(current LSN, its WAL file name) on a primary."""
    with session(server) as conn:
        lsn, wal = one_row(conn, CURRENT_POSITION_SQL)
    return lsn, wal


def segment_size(server: ServerConfig) -> int:
    """PostgreSQL's wal_segment_size, in bytes."""
    with connect(server) as conn:
        return int(one_row(conn, f"SELECT {SEGMENT_SIZE_SQL}")[0])


def slot_restart_lsn(server: ServerConfig, name: str) -> tuple[bool, str | None]:
    """(slot exists, its restart_lsn) for a physical slot."""
    with connect(server) as conn:
        row = conn.execute(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
        ).fetchone()
    return (row is not None, row[0] if row else None)


@dataclass(frozen=True)
class SwitchResult:
    """What ``pg_switch_wal()`` did: ``closed`` is the last segment that holds WAL written
    before the call (the one just closed, or the previous one when nothing needed closing),
    the one ``switch-wal --archive`` waits for."""

    server: str
    closed: str
    switched: bool
    forced: bool

    @property
    def message(self) -> str:
        """A line for the operator, in Barman's words."""
        if self.switched:
            return f"The WAL file {self.closed} has been closed on server '{self.server}'"
        hint = "" if self.forced else " (use --force to checkpoint first)"
        return f"No switch required for server '{self.server}'{hint}"


def switch_wal(server: ServerConfig, force: bool = False) -> SwitchResult:
    """``pg_switch_wal()``; with ``force`` a CHECKPOINT first so an idle server has something to close.

    ``pg_walfile_name`` of the LSN it returns names the closed segment; when nothing
    was written since the last switch that LSN is the current segment's start, and
    the name is the previous segment's: already closed, everything before it too.
    """
    with session(server, "switch-wal failed: ") as conn:
        if one_row(conn, "SELECT pg_is_in_recovery()")[0]:
            raise PostgresError(
                f"{server.name}: the server is in recovery; switch WAL on the primary"
            )
        if force:
            conn.execute("CHECKPOINT")
        before = one_row(conn, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0]
        closed = one_row(conn, "SELECT pg_walfile_name(pg_switch_wal())")[0]
        after = one_row(conn, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0]
    return SwitchResult(server.name, closed, switched=after != before, forced=force)


def learn_identity(catalog: Catalog, server: ServerConfig) -> int | None:
    """Learn the system identifier and segment size from PostgreSQL, or refuse a conflict.

    Called before archiving when ``conninfo`` is set, so the very first WAL is
    already checked against the cluster. Unreachable PostgreSQL is not an error
    here (the first WAL's header still teaches the identity); a conflict is.
    """
    if not server.conninfo:
        return None
    try:
        with connect(server, timeout=3) as conn:
            sysid, seg = one_row(
                conn,
                f"SELECT (SELECT system_identifier FROM pg_control_system()), {SEGMENT_SIZE_SQL}",
            )
    except Exception:  # best effort, see docstring
        return None
    sysid = int(sysid)
    known = adopt_identity(catalog, server, sysid, int(seg) if seg else None)
    if known is not None:
        raise ConfigError(
            f"servers.{server.name}: PostgreSQL reports system identifier {sysid} but this server's "
            f"archive belongs to {known} (conninfo points at another cluster?)"
        )
    return sysid
