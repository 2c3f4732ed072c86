"""Talking to the archived PostgreSQL server (psycopg 3): facts, slots, switch-wal.

Everything here is read-mostly and short-lived: one connection per call, a
short connect timeout, autocommit. Failures surface as ``PostgresError`` (a
TransientError: the server may come back) whose message never contains a
password (walq.masking hides secrets, here through ``mask_conninfo``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from walq.catalog import Catalog
from walq.config import ServerConfig
from walq.errors import ConfigError, PostgresError
from walq.masking import mask_library_logs, mask_secrets, url_passwords

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
        raise ConfigError(f"servers.{server.name}.conninfo is not set (needed to talk to PostgreSQL)")
    return server.conninfo


def connect(server: ServerConfig, timeout: int = CONNECT_TIMEOUT):  # -> psycopg.Connection
    import psycopg

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
    replication_lag_bytes: int | None = None  # for the walq slot's active connection (flush position)

    def slot(self, name: str) -> SlotInfo | None:
        return next((s for s in self.slots if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["archive_command"] = mask_conninfo(self.archive_command)
        return data


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def fetch_info(server: ServerConfig) -> PgInfo:
    """Read version, identity, archiving settings, archiver stats, slots and WAL position."""
    import psycopg

    with connect(server) as conn:
        try:
            return _fetch(conn, slot_name(server))
        except psycopg.Error as exc:
            raise PostgresError(f"{server.name}: query failed: {_first_line(exc)}") from None


def _fetch(conn: Any, walq_slot: str) -> PgInfo:
    one = conn.execute(
        """
        SELECT current_setting('server_version_num')::int,
               current_setting('server_version'),
               (SELECT system_identifier FROM pg_control_system()),
               (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
               current_setting('archive_mode'),
               current_setting('archive_command'),
               pg_is_in_recovery()
        """
    ).fetchone()
    version_num, version, sysid, seg_size, archive_mode, archive_command, in_recovery = one
    if in_recovery:
        lsn = conn.execute("SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text").fetchone()[0]
        wal = None  # pg_walfile_name() is refused during recovery
    else:
        lsn, wal = conn.execute(
            "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
        ).fetchone()
    arch = conn.execute(
        "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
        "last_failed_wal, last_failed_time FROM pg_stat_archiver"
    ).fetchone()
    rows = conn.execute(
        "SELECT slot_name::text, slot_type, active, active_pid, restart_lsn::text, wal_status, "
        "pg_wal_lsn_diff(%s::pg_lsn, restart_lsn)::bigint FROM pg_replication_slots ORDER BY slot_name",
        (lsn,),
    ).fetchall()
    slots = [SlotInfo(*row) for row in rows]
    lag = None
    mine = next((s for s in slots if s.name == walq_slot and s.active_pid), None)
    if mine is not None and lsn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, flush_lsn)::bigint FROM pg_stat_replication WHERE pid = %s",
            (lsn, mine.active_pid),
        ).fetchone()
        lag = row[0] if row else None
    return PgInfo(
        version_num=version_num, version=version, system_identifier=int(sysid),
        wal_segment_size=int(seg_size), archive_mode=archive_mode, archive_command=archive_command,
        in_recovery=in_recovery, current_lsn=lsn, current_wal=wal,
        archiver=ArchiverStats(arch[0], arch[1], _ts(arch[2]), arch[3], arch[4], _ts(arch[5])),
        slots=slots, replication_lag_bytes=lag,
    )


def current_position(server: ServerConfig) -> tuple[str, str]:
    """(current LSN, its WAL file name) on a primary."""
    import psycopg

    with connect(server) as conn:
        try:
            lsn, wal = conn.execute(
                "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
            ).fetchone()
        except psycopg.Error as exc:
            raise PostgresError(f"{server.name}: {_first_line(exc)}") from None
    return lsn, wal


def slot_restart_lsn(server: ServerConfig, name: str) -> tuple[bool, str | None]:
    """(slot exists, its restart_lsn) for a physical slot."""
    with connect(server) as conn:
        row = conn.execute(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
        ).fetchone()
    return (row is not None, row[0] if row else None)


def switch_wal(server: ServerConfig, force: bool = False) -> str:
    """``pg_switch_wal()``; with ``force`` a CHECKPOINT first so an idle server has something to close.

    Returns a line for the operator: which WAL was closed, or that none needed closing.
    """
    import psycopg

    with connect(server) as conn:
        try:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                raise PostgresError(f"{server.name}: the server is in recovery; switch WAL on the primary")
            if force:
                conn.execute("CHECKPOINT")
            before = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
            closed = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            after = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
        except psycopg.Error as exc:
            raise PostgresError(f"{server.name}: switch-wal failed: {_first_line(exc)}") from None
    if after != before:
        return f"The WAL file {closed} has been closed on server '{server.name}'"
    hint = "" if force else " (use --force to checkpoint first)"
    return f"No switch required for server '{server.name}'{hint}"


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
            sysid, seg = conn.execute(
                "SELECT (SELECT system_identifier FROM pg_control_system()), "
                "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
            ).fetchone()
    except Exception:  # noqa: BLE001 - best effort, see docstring
        return None
    sysid = int(sysid)
    known = server.system_identifier or int(catalog.get_meta(server.name, "system_identifier") or 0)
    if known and known != sysid:
        raise ConfigError(
            f"servers.{server.name}: PostgreSQL reports system identifier {sysid} but this server's "
            f"archive belongs to {known} (conninfo points at another cluster?)"
        )
    if not known:
        catalog.set_meta(server.name, "system_identifier", str(sysid))
    if seg and not catalog.get_meta(server.name, "wal_segment_size"):
        catalog.set_meta(server.name, "wal_segment_size", str(int(seg)))
    return sysid

