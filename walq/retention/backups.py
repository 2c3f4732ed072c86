"""Base backups walq can know about: PostgreSQL's .backup files and Barman's backup.info.

Retention is driven by base backups, but walq does not take them. It learns of
them from two places:

* the backup history files PostgreSQL archives at the end of a base backup taken
  on a primary (``<segment>.<offset>.backup``; a backup taken on a standby writes
  none, so walq cannot see it);
* Barman's backup.info files when a Barman server shares the home
  (``meta/<id>-backup.info`` since Barman 3.13.2, ``base/<id>/backup.info`` before
  and in barman-cloud's prefix).

I/O is injected (``read_object`` and the Barman infos as bytes), so the same code
reads local disk and S3.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Literal

from walq.errors import WalqError, clip
from walq.wal import (
    MAX_TEXT_SIZE,
    WalKind,
    WalNameError,
    parse_lsn,
    parse_wal_name,
    segment_name,
    segment_number,
    validate_backup_label,
)

Source = Literal["walq", "barman"]

# Barman statuses for which Barman still needs the backup's WAL (its STATUS_ARCHIVING).
BARMAN_NEEDS_WAL = frozenset({"STARTED", "WAITING_FOR_WALS", "DONE", "SYNCING"})


class BackupParseError(ValueError):
    """A backup description that cannot be read; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One base backup, as far as retention needs it.

    ``name`` is the .backup file name (source 'walq') or Barman's backup id.
    ``complete`` is set by known_backups: the backup's WAL from its start segment to
    its stop segment is archived, so a restore from it can reach consistency.
    Times are aware datetimes, or None when the source's time cannot be placed in a
    time zone. ``barman_status`` is Barman's status for Barman records."""

    name: str
    source: Source
    label: str | None
    timeline: int
    start_wal: str
    start_lsn: int
    stop_wal: str | None
    stop_lsn: int | None
    start_time: datetime | None
    stop_time: datetime | None
    complete: bool = False
    barman_status: str | None = None

    @property
    def done(self) -> bool:
        """The source says the backup finished (Barman: DONE; PostgreSQL: it wrote the file)."""
        return self.stop_wal is not None and (self.source == "walq" or self.barman_status == "DONE")

    @property
    def pinned(self) -> bool:
        """Barman holds this backup and may restore it: walq's policy never expires it,
        because walq cannot delete Barman's base backup and must not orphan it."""
        return self.source == "barman" and self.barman_status in BARMAN_NEEDS_WAL

    def same_backup(self, other: BackupInfo) -> bool:
        """Two descriptions of one backup: same start WAL and LSN, and no conflicting label."""
        return (
            self.start_wal == other.start_wal
            and self.start_lsn == other.start_lsn
            and (self.label is None or other.label is None or self.label == other.label)
        )


# --- PostgreSQL backup history files -------------------------------------------------

_LOCATION = re.compile(r"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}) \(file ([0-9A-F]{24})\)")
_PG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)")
_OFFSET = re.compile(r"([+-])(\d\d)(?::?(\d\d))?")
_UTC_NAMES = frozenset({"UTC", "GMT", "UCT", "Z", "Etc/UTC"})


def pg_time(text: str, zone: tzinfo | None = None) -> datetime | None:
    """A ``START TIME``/``STOP TIME`` value as an aware datetime, or None.

    PostgreSQL writes ``%Y-%m-%d %H:%M:%S %Z`` in its log_timezone, and %Z is an
    abbreviation (``UTC``, ``CET``, ``+03``). Abbreviations are ambiguous, so one is
    accepted only when it is UTC, a numeric offset, or the abbreviation ``zone`` (the
    server's log_timezone, when the caller knows it) or the local zone uses at that
    moment. Otherwise None: better no time than a wrong one."""
    m = _PG_TIME.fullmatch(text.strip())
    if m is None:
        return None
    try:
        naive = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    abbrev = m.group(2)
    if abbrev in _UTC_NAMES:
        return naive.replace(tzinfo=UTC)
    off = _OFFSET.fullmatch(abbrev)
    if off:
        delta = timedelta(hours=int(off.group(2)), minutes=int(off.group(3) or 0))
        if delta >= timedelta(hours=24):
            return None
        return naive.replace(tzinfo=timezone(-delta if off.group(1) == "-" else delta))
    candidates = [naive.replace(tzinfo=zone, fold=f) for f in (0, 1)] if zone else []
    candidates.append(naive.astimezone())  # the local zone, as Barman reads naive times
    for dt in candidates:
        if dt.tzname() == abbrev:
            return dt
    return None


def _location(key: str, value: str) -> tuple[int, str]:
    m = _LOCATION.fullmatch(value.strip())
    if m is None:
        raise BackupParseError(f"{key} is not 'X/X (file <segment>)': {clip(value)}")
    lsn, wal = parse_lsn(m.group(1)), m.group(2)
    if lsn >> 32 != int(wal[8:16], 16):
        raise BackupParseError(f"{key}: LSN {m.group(1)} is not in file {wal}")
    return lsn, wal


def parse_backup_history(name: str, content: bytes, zone: tzinfo | None = None) -> BackupInfo:
    """A PostgreSQL backup history file (``<segment>.<offset>.backup``).

    Lines are ``KEY: value``: START/STOP WAL LOCATION (``0/2000028 (file ...)``),
    CHECKPOINT LOCATION, BACKUP METHOD, BACKUP FROM, START TIME, LABEL, START
    TIMELINE, STOP TIME, STOP TIMELINE (the two TIMELINE lines since PostgreSQL 11;
    without them the timelines come from the file names). Raises BackupParseError."""
    try:
        wal = parse_wal_name(name)
    except WalNameError as exc:
        raise BackupParseError(str(exc)) from None
    if wal.kind is not WalKind.BACKUP:
        raise BackupParseError(f"{clip(name)} is not a backup history file name")
    if len(content) > MAX_TEXT_SIZE:
        raise BackupParseError(
            f"{name}: {len(content)} bytes is too large for a backup history file"
        )
    try:
        validate_backup_label(content)
    except WalqError as exc:
        raise BackupParseError(f"{name}: {exc}") from None
    fields: dict[str, str] = {}
    for line in content.decode().splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue  # PostgreSQL writes nothing else; tolerate blank or foreign lines
        if key in fields:
            raise BackupParseError(f"{name}: {key} appears twice")
        fields[key] = value
    for key in ("START WAL LOCATION", "STOP WAL LOCATION", "LABEL"):
        if key not in fields:
            raise BackupParseError(f"{name} lacks {key!r}")
    start_lsn, start_wal = _location("START WAL LOCATION", fields["START WAL LOCATION"])
    stop_lsn, stop_wal = _location("STOP WAL LOCATION", fields["STOP WAL LOCATION"])
    if start_wal != wal.segment.upper():
        raise BackupParseError(
            f"{name}: START WAL LOCATION names file {start_wal}, not its own segment"
        )
    if stop_lsn < start_lsn:
        raise BackupParseError(f"{name}: STOP WAL LOCATION is before START WAL LOCATION")
    timeline = _timeline(name, fields.get("START TIMELINE"), start_wal)
    _timeline(name, fields.get("STOP TIMELINE"), stop_wal)
    return BackupInfo(
        name=name,
        source="walq",
        label=fields["LABEL"],
        timeline=timeline,
        start_wal=start_wal,
        start_lsn=start_lsn,
        stop_wal=stop_wal,
        stop_lsn=stop_lsn,
        start_time=pg_time(fields.get("START TIME", ""), zone),
        stop_time=pg_time(fields.get("STOP TIME", ""), zone),
    )


def _timeline(name: str, value: str | None, wal: str) -> int:
    tli = int(wal[:8], 16)
    if value is not None and (
        not value.strip().isascii() or not value.strip().isdigit() or int(value) != tli
    ):
        raise BackupParseError(f"{name}: timeline {clip(value)} does not match file {wal}")
    return tli


# --- Barman backup.info ----------------------------------------------------------------


def _barman_time(backup_id: str, key: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BackupParseError(
            f"backup {clip(backup_id)}: {key} is not a time: {clip(value)}"
        ) from None
    return dt if dt.tzinfo else dt.astimezone()  # Barman reads naive times as local


def _barman_label(backup_id: str, value: str | None) -> str | None:
    """The LABEL line of the backup_label Barman stores as a Python string literal."""
    if value is None:
        return None
    try:
        text = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise BackupParseError(
            f"backup {clip(backup_id)}: backup_label is not a string literal"
        ) from None
    if not isinstance(text, str | bytes):
        raise BackupParseError(f"backup {clip(backup_id)}: backup_label is not a string literal")
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("LABEL: "):
            return line[len("LABEL: ") :]
    return None


def parse_barman_info(backup_id: str, content: bytes) -> BackupInfo:
    """Barman's ``base/<backup_id>/backup.info``: ``key=value`` lines, ``None`` for absent.

    Fields used: status, timeline, begin_wal, begin_xlog, begin_time, end_wal,
    end_xlog, end_time, backup_label (for the LABEL). A DONE backup must name its
    begin and end WAL; other statuses only need the beginning. Raises BackupParseError."""
    if len(content) > MAX_TEXT_SIZE:
        raise BackupParseError(f"backup {clip(backup_id)}: backup.info is {len(content)} bytes")
    try:
        text = content.decode()
    except UnicodeDecodeError:
        raise BackupParseError(f"backup {clip(backup_id)}: backup.info is not UTF-8") from None
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise BackupParseError(
                f"backup {clip(backup_id)}: invalid backup.info line {clip(line.strip())}"
            )
        value = value.strip()
        values[key.strip()] = None if value == "None" else value
    status = values.get("status") or "EMPTY"
    try:
        begin_wal = values.get("begin_wal")
        begin_xlog = values.get("begin_xlog")
        if not begin_wal or not begin_xlog:
            raise BackupParseError("has no begin_wal/begin_xlog")
        start = parse_wal_name(begin_wal)
        end_wal, end_xlog = values.get("end_wal"), values.get("end_xlog")
        if status == "DONE" and (not end_wal or not end_xlog):
            raise BackupParseError("is DONE but has no end_wal/end_xlog")
        if end_wal:
            parse_wal_name(end_wal)
        timeline = int(values.get("timeline") or start.tli)
        if start.kind is not WalKind.SEGMENT or timeline != start.tli:
            raise BackupParseError(f"timeline {timeline} does not match begin_wal {begin_wal}")
        if parse_lsn(begin_xlog) >> 32 != start.log:
            raise BackupParseError(f"begin_xlog {begin_xlog} is not in begin_wal {begin_wal}")
        return BackupInfo(
            name=backup_id,
            source="barman",
            label=_barman_label(backup_id, values.get("backup_label")),
            timeline=timeline,
            start_wal=begin_wal.upper(),
            start_lsn=parse_lsn(begin_xlog),
            stop_wal=end_wal.upper() if end_wal else None,
            stop_lsn=parse_lsn(end_xlog) if end_xlog else None,
            start_time=_barman_time(backup_id, "begin_time", values.get("begin_time")),
            stop_time=_barman_time(backup_id, "end_time", values.get("end_time")),
            barman_status=status,
        )
    except BackupParseError as exc:
        if str(exc).startswith("backup "):
            raise
        raise BackupParseError(f"backup {clip(backup_id)}: {exc}") from None
    except (WalqError, ValueError) as exc:
        raise BackupParseError(f"backup {clip(backup_id)}: {exc}") from None


# --- Discovery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupDiscovery:
    """What known_backups found. ``problems`` name descriptions that could not be read:
    a planner must refuse while any remain, since an unread backup may be the one
    whose WAL it would delete."""

    backups: tuple[BackupInfo, ...]
    problems: tuple[str, ...] = field(default=())


def _is_complete(b: BackupInfo, archived: set[str], seg_size: int | None) -> bool:
    if not b.done or b.stop_wal is None:
        return False
    if b.start_wal not in archived or b.stop_wal not in archived:
        return False
    if seg_size and b.start_wal[:8] == b.stop_wal[:8]:
        first, last = segment_number(b.start_wal, seg_size), segment_number(b.stop_wal, seg_size)
        tli = int(b.start_wal[:8], 16)
        return all(segment_name(tli, n, seg_size) in archived for n in range(first + 1, last))
    return True


def read_barman_backup_infos(server_dir: str) -> list[tuple[str, bytes]]:
    """``(backup_id, backup.info bytes)`` for every backup a local Barman server holds.

    Barman 3.13.2 and later keep ``<server>/meta/<backup_id>-backup.info``; earlier
    versions (and barman-cloud's S3 layout) keep ``<server>/base/<backup_id>/backup.info``.
    Barman reads both, the meta file taking precedence, and so does this. Symlinks
    are not followed."""
    found: dict[str, bytes] = {}
    for backup_id, path in [
        *(
            (d, os.path.join(server_dir, "base", d, "backup.info"))
            for d in _listdir(os.path.join(server_dir, "base"))
        ),
        *(
            (f[: -len("-backup.info")], os.path.join(server_dir, "meta", f))
            for f in _listdir(os.path.join(server_dir, "meta"))
            if f.endswith("-backup.info") and len(f) > 12
        ),
    ]:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            found[backup_id] = f.read(MAX_TEXT_SIZE + 1)
    return sorted(found.items())


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def known_backups(
    archived_names: Iterable[str],
    read_object: Callable[[str], bytes],
    barman_infos: Iterable[tuple[str, bytes]] = (),
    *,
    seg_size: int | None = None,
    zone: tzinfo | None = None,
) -> BackupDiscovery:
    """Every base backup described by an archived .backup file or a Barman backup.info.

    ``read_object(name)`` returns an archived file's plain bytes (errors propagate:
    a storage failure is not a missing backup). ``barman_infos`` yields ``(backup_id,
    backup.info bytes)`` (read_barman_backup_infos for a local Barman server directory).

    When both describe one backup (same start WAL and LSN, labels not in conflict),
    **Barman's description wins**: Barman knows whether the backup's data exists and
    finished (DONE) or failed, which a .backup file cannot say. So a Barman record that
    is not DONE also stops the .backup file from counting that backup as complete.

    A backup is complete when its source says it finished and its start and stop
    segments are archived (with ``seg_size``, every segment between them on one
    timeline too)."""
    archived = set(archived_names)
    problems: list[str] = []
    barman: list[BackupInfo] = []
    for backup_id, content in barman_infos:
        try:
            barman.append(parse_barman_info(backup_id, content))
        except BackupParseError as exc:
            problems.append(str(exc))
    walq: list[BackupInfo] = []
    for name in sorted(archived):
        try:
            if parse_wal_name(name).kind is not WalKind.BACKUP:
                continue
        except WalNameError:
            continue
        try:
            walq.append(parse_backup_history(name, read_object(name), zone))
        except BackupParseError as exc:
            problems.append(str(exc))
    merged = barman + [w for w in walq if not any(b.same_backup(w) for b in barman)]
    done = tuple(replace(b, complete=_is_complete(b, archived, seg_size)) for b in merged)
    return BackupDiscovery(
        tuple(sorted(done, key=lambda b: (b.start_lsn, b.timeline, b.name))), tuple(problems)
    )
