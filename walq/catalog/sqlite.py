"""SQLite catalog for embedded mode: one file under ``home``, no server needed."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from walq.catalog.base import (
    ArchivedInfo,
    ArchiveSummary,
    Claims,
    WalRecord,
    WalState,
    check_transition,
    summary_from_row,
    summary_sql,
    unique_candidates,
)
from walq.errors import ConfigError, FencedError
from walq.fsutil import makedirs_durable, open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS wal (
    server TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    source_path TEXT,
    size INTEGER,
    stored_size INTEGER,
    codec TEXT,
    encryption TEXT,
    checksum TEXT,
    storage_key TEXT,
    mtime REAL,
    claimed_at REAL,
    deadline REAL,
    archived_at REAL,
    prepare_seconds REAL,
    store_seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (server, name)
);
CREATE INDEX IF NOT EXISTS wal_state ON wal (server, state);
CREATE TABLE IF NOT EXISTS fence (server TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (server TEXT, key TEXT, value TEXT, PRIMARY KEY (server, key));
"""
# Columns added after the first release: (name, type). A catalog written by an older
# walq gets them with ALTER TABLE when opened for writing; a read-only one reads NULLs.
# checksum_algorithm NULL (a row archived before it was recorded) means sha256.
ADDED_COLUMNS = [
    ("expired_at", "REAL"),
    ("reason", "TEXT"),
    ("stored_at", "REAL"),
    ("checksum_algorithm", "TEXT"),
]
_SUMMARY = summary_sql("wal", "?")
IN_CHUNK = 500  # names per ``IN (...)``: well under SQLite's bound parameters limit


def _record(row: tuple) -> WalRecord:
    values = list(row)
    values[2] = WalState(values[2])
    return WalRecord(*values)


class SqliteCatalog:
    """Catalog in a SQLite file; every write is its own short transaction."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                self.db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None
                )
            else:
                makedirs_durable(self.path.parent)
                if (
                    not self.path.exists()
                ):  # SQLite gives its -wal and -shm files the database's mode
                    os.close(open_private(self.path, os.O_WRONLY | os.O_CREAT))
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(wal)")}
            missing = [(n, t) for n, t in ADDED_COLUMNS if n not in have]
            if missing and not readonly:
                for column, kind in missing:
                    self.db.execute(f"ALTER TABLE wal ADD COLUMN {column} {kind}")
                missing = []
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"catalog {self.path}: {exc}") from exc
        absent = {n for n, _ in missing}
        self._select = (
            "SELECT "
            + ", ".join(f"NULL AS {c}" if c in absent else c for c in WalRecord.COLUMNS)
            + " FROM wal"
        )

    def _write(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def claim(
        self, server: str, name: str, source_path: str, timeout: float, *, steal: bool = False
    ) -> bool:
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT state, deadline FROM wal WHERE server=? AND name=?", (server, name)
            ).fetchone()
            if row is None:
                self.db.execute(
                    "INSERT INTO wal (server, name, state, source_path, claimed_at, deadline) VALUES (?,?,?,?,?,?)",
                    (server, name, WalState.CLAIMED, source_path, now, now + timeout),
                )
                claimed = True
            elif row[0] == WalState.CLAIMED and (steal or (row[1] or 0) <= now):
                self.db.execute(
                    "UPDATE wal SET source_path=?, claimed_at=?, deadline=?, stored_at=NULL "
                    "WHERE server=? AND name=?",
                    (source_path, now, now + timeout, server, name),
                )
                claimed = True
            else:
                claimed = False
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return claimed

    def claim_many(
        self,
        server: str,
        candidates: list[tuple[str, str]],
        timeout: float,
        *,
        steal: bool = False,
    ) -> Claims:
        wanted = unique_candidates(candidates)
        now = time.time()
        claimed: list[str] = []
        others: dict[str, WalRecord] = {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._rows_named(server, [name for name, _ in wanted])
            fresh, renewed = [], []
            for name, source in wanted:
                record = rows.get(name)
                if record is None:
                    fresh.append((server, name, WalState.CLAIMED, source, now, now + timeout))
                elif record.state is WalState.CLAIMED and (steal or (record.deadline or 0) <= now):
                    renewed.append((source, now, now + timeout, server, name))
                else:
                    others[name] = record
                    continue
                claimed.append(name)
            self.db.executemany(
                "INSERT INTO wal (server, name, state, source_path, claimed_at, deadline) VALUES (?,?,?,?,?,?)",
                fresh,
            )
            self.db.executemany(
                "UPDATE wal SET source_path=?, claimed_at=?, deadline=?, stored_at=NULL "
                "WHERE server=? AND name=?",
                renewed,
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return Claims(claimed, others)

    def _rows_named(self, server: str, names: list[str]) -> dict[str, WalRecord]:
        """The server's rows among ``names``, by name (a few ``IN`` queries)."""
        found: dict[str, WalRecord] = {}
        for i in range(0, len(names), IN_CHUNK):
            chunk = names[i : i + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                self._select + f" WHERE server=? AND name IN ({marks})", (server, *chunk)
            ):
                record = _record(row)
                found[record.name] = record
        return found

    def extend(self, server: str, name: str, timeout: float) -> None:
        self._write(
            "UPDATE wal SET deadline=? WHERE server=? AND name=? AND state=?",
            (time.time() + timeout, server, name, WalState.CLAIMED),
        )

    def release(self, server: str, name: str, error: str) -> None:
        self._write(
            "UPDATE wal SET deadline=?, attempts=attempts+1, last_error=? WHERE server=? AND name=? AND state=?",
            (time.time(), error, server, name, WalState.CLAIMED),
        )

    def mark_failed(
        self, server: str, name: str, error: str, source_path: str | None = None
    ) -> None:
        self._write(
            "INSERT INTO wal (server, name, state, source_path, attempts, last_error) VALUES (?,?,?,?,1,?) "
            "ON CONFLICT (server, name) DO UPDATE SET state=excluded.state, attempts=wal.attempts+1, "
            "last_error=excluded.last_error, source_path=COALESCE(excluded.source_path, wal.source_path) "
            "WHERE wal.state NOT IN ('archived', 'expired')",
            (server, name, WalState.FAILED, source_path, error),
        )

    def mark_archived(
        self, server: str, name: str, info: ArchivedInfo, fence: int | None = None
    ) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if fence is not None:
                row = self.db.execute(
                    "SELECT token FROM fence WHERE server=?", (server,)
                ).fetchone()
                if row is not None and fence < row[0]:
                    raise FencedError(
                        f"commit of {name} refused: fencing token {fence} is older than {row[0]}"
                    )
                self.db.execute(
                    "INSERT INTO fence (server, token) VALUES (?, ?) ON CONFLICT (server) DO UPDATE SET token=excluded.token",
                    (server, fence),
                )
            row = self.db.execute(
                "SELECT state FROM wal WHERE server=? AND name=?", (server, name)
            ).fetchone()
            check_transition(server, name, row[0] if row else None, WalState.ARCHIVED)
            columns, values = info.assignments("?")
            self.db.execute(
                f"UPDATE wal SET state=?, {columns}, archived_at=?, deadline=NULL, last_error=NULL "
                "WHERE server=? AND name=? AND state=?",
                (WalState.ARCHIVED, *values, time.time(), server, name, WalState.CLAIMED),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def mark_stored(self, server: str, name: str, info: ArchivedInfo, timeout: float) -> bool:
        columns, values = info.assignments("?")
        now = time.time()
        cur = self._write(
            f"UPDATE wal SET {columns}, stored_at=?, deadline=? WHERE server=? AND name=? AND state=?",
            (*values, now, now + timeout, server, name, WalState.CLAIMED),
        )
        return cur.rowcount == 1

    def commit_candidates(self, server: str) -> list[WalRecord]:
        return self.records(server, WalState.CLAIMED)

    def commit_stored(self, server: str, names: list[str], fence: int | None = None) -> list[str]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._check_fence(server, fence, "commit")
            now = time.time()
            moved = [
                name
                for name in names
                if self.db.execute(
                    "UPDATE wal SET state=?, archived_at=?, deadline=NULL, last_error=NULL "
                    "WHERE server=? AND name=? AND state=? AND stored_at IS NOT NULL",
                    (WalState.ARCHIVED, now, server, name, WalState.CLAIMED),
                ).rowcount
            ]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return moved

    def commit_ready(
        self,
        server: str,
        choose: Callable[[list[WalRecord]], list[str]],
        fence: int | None = None,
    ) -> list[str]:
        # Two transactions here: a write transaction opened for the read would hold
        # SQLite's one write lock while ``choose`` runs (the embedded catalog is local).
        names = choose(self.commit_candidates(server))
        return self.commit_stored(server, names, fence) if names else []

    def mark_expired(
        self, server: str, names: list[str], reason: str, fence: int | None = None
    ) -> list[str]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._check_fence(server, fence, "expiry")
            moved = []
            for name in names:
                row = self.db.execute(
                    "SELECT state FROM wal WHERE server=? AND name=?", (server, name)
                ).fetchone()
                if row is not None and row[0] == WalState.EXPIRED:
                    continue
                check_transition(server, name, row[0] if row else None, WalState.EXPIRED)
                moved.append(name)
            now = time.time()
            self.db.executemany(
                "UPDATE wal SET state=?, expired_at=?, reason=? WHERE server=? AND name=? AND state=?",
                [(WalState.EXPIRED, now, reason, server, n, WalState.ARCHIVED) for n in moved],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return moved

    def _check_fence(self, server: str, fence: int | None, what: str) -> None:
        """Inside a write transaction: refuse a token older than the newest seen, record it."""
        if fence is None:
            return
        row = self.db.execute("SELECT token FROM fence WHERE server=?", (server,)).fetchone()
        if row is not None and fence < row[0]:
            raise FencedError(f"{what} refused: fencing token {fence} is older than {row[0]}")
        self.db.execute(
            "INSERT INTO fence (server, token) VALUES (?, ?) ON CONFLICT (server) DO UPDATE SET token=excluded.token",
            (server, fence),
        )

    def get(self, server: str, name: str) -> WalRecord | None:
        row = self.db.execute(
            self._select + " WHERE server=? AND name=?", (server, name)
        ).fetchone()
        return _record(row) if row else None

    def records(self, server: str, state: WalState | None = None) -> list[WalRecord]:
        if state is None:
            rows = self.db.execute(self._select + " WHERE server=? ORDER BY name", (server,))
        else:
            rows = self.db.execute(
                self._select + " WHERE server=? AND state=? ORDER BY name", (server, state)
            )
        return [_record(r) for r in rows]

    def archived_names(self, server: str) -> list[str]:
        rows = self.db.execute(
            "SELECT name FROM wal WHERE server=? AND state=? ORDER BY name",
            (server, WalState.ARCHIVED),
        )
        return [r[0] for r in rows]

    def counts(self, server: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT state, count(*) FROM wal WHERE server=? GROUP BY state", (server,)
        )
        counts = {s.value: 0 for s in WalState}
        counts.update(dict(rows.fetchall()))
        return counts

    def summary(self, server: str) -> ArchiveSummary:
        return summary_from_row(self.db.execute(_SUMMARY, (server,)).fetchone())

    def reset_failed(self, server: str, names: list[str] | None = None) -> list[str]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if names is None:
                found = [
                    r[0]
                    for r in self.db.execute(
                        "SELECT name FROM wal WHERE server=? AND state=?", (server, WalState.FAILED)
                    )
                ]
            else:
                found = [
                    n
                    for n in names
                    if self.db.execute(
                        "SELECT 1 FROM wal WHERE server=? AND name=? AND state=?",
                        (server, n, WalState.FAILED),
                    ).fetchone()
                ]
            now = time.time()
            self.db.executemany(
                "UPDATE wal SET state=?, deadline=?, claimed_at=? WHERE server=? AND name=?",
                [(WalState.CLAIMED, now, now, server, n) for n in found],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return sorted(found)

    def get_meta(self, server: str, key: str) -> str | None:
        row = self.db.execute(
            "SELECT value FROM meta WHERE server=? AND key=?", (server, key)
        ).fetchone()
        return row[0] if row else None

    def set_meta(self, server: str, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (server, key, value) VALUES (?,?,?) ON CONFLICT (server, key) DO UPDATE SET value=excluded.value",
            (server, key, value),
        )

    def close(self) -> None:
        self.db.close()
