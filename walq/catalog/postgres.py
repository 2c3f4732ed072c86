"""PostgreSQL catalog for the fleet: many workers on many hosts, one system of record.

Same contract as SqliteCatalog (walq/catalog/base.py). Times come from the
database clock, so deadlines mean the same thing on every worker host. Claims
are single statements (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), so two
scans racing for one WAL cannot both win. The fence row is locked ``FOR UPDATE``
in the commit's transaction, so a stale token is refused where the write happens.
The schema is created or migrated on first use and by ``walq catalog init``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool

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
from walq.errors import ConfigError, FencedError, TransientError
from walq.masking import mask_library_logs, mask_secrets, url_passwords

# psycopg_pool logs every failed connection attempt with libpq's message, which can
# quote the whole conninfo (password included): mask those lines wherever they go.
mask_library_logs("psycopg", "psycopg.pool")
CONNECT_TIMEOUT = 5  # seconds for the first connection: an unreachable catalog fails fast

# One entry per schema version; never edit a shipped entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS walq_wal (
        server text NOT NULL,
        name text NOT NULL,
        state text NOT NULL,
        source_path text,
        size bigint,
        stored_size bigint,
        codec text,
        encryption text,
        checksum text,
        storage_key text,
        mtime double precision,
        claimed_at double precision,
        deadline double precision,
        archived_at double precision,
        prepare_seconds double precision,
        store_seconds double precision,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        PRIMARY KEY (server, name)
    );
    CREATE INDEX IF NOT EXISTS walq_wal_state ON walq_wal (server, state);
    CREATE TABLE IF NOT EXISTS walq_fence (server text PRIMARY KEY, token bigint NOT NULL);
    CREATE TABLE IF NOT EXISTS walq_meta (
        server text NOT NULL, key text NOT NULL, value text, PRIMARY KEY (server, key)
    );
    """,
    # 2: retention (walq expire): when and why a row expired
    """
    ALTER TABLE walq_wal ADD COLUMN IF NOT EXISTS expired_at double precision,
                         ADD COLUMN IF NOT EXISTS reason text;
    """,
    # 3: the fleet's group commit: a claimed row whose object is stored
    """
    ALTER TABLE walq_wal ADD COLUMN IF NOT EXISTS stored_at double precision;
    """,
    # 4: the algorithm of each row's checksum (walq.checksums); NULL on older rows: sha256
    """
    ALTER TABLE walq_wal ADD COLUMN IF NOT EXISTS checksum_algorithm text;
    """,
]
SCHEMA_LOCK = 0x77616C71  # pg_advisory_xact_lock key: 'walq'
NOW = "extract(epoch from clock_timestamp())::double precision"
_SELECT = "SELECT " + ", ".join(WalRecord.COLUMNS) + " FROM walq_wal"
_SUMMARY = summary_sql("walq_wal", "%s")
_COLUMNS = ", ".join(WalRecord.COLUMNS)
# One statement claims a scan's candidates: the INSERT ... ON CONFLICT of ``claim`` over
# the whole list (rows in WAL order), then every candidate row it did not claim as the
# statement's snapshot saw it. A row another scan inserted meanwhile is in neither list:
# it is simply not claimed here.
_CLAIM_MANY = (
    f"WITH c(name, source_path) AS (SELECT * FROM unnest(%(names)s::text[], %(sources)s::text[])), "
    f"claimed AS (INSERT INTO walq_wal AS w (server, name, state, source_path, claimed_at, deadline) "
    f"SELECT %(server)s, c.name, 'claimed', c.source_path, {NOW}, {NOW} + %(timeout)s "
    f"FROM c ORDER BY c.name "
    f"ON CONFLICT (server, name) DO UPDATE SET source_path = EXCLUDED.source_path, "
    f"claimed_at = EXCLUDED.claimed_at, deadline = EXCLUDED.deadline, stored_at = NULL "
    f"WHERE w.state = 'claimed' AND (%(steal)s OR coalesce(w.deadline, 0) <= EXCLUDED.claimed_at) "
    f"RETURNING w.name) "
    f"SELECT true, %(server)s, name, {', '.join('NULL' for _ in WalRecord.COLUMNS[2:])} FROM claimed "
    f"UNION ALL SELECT false, {_COLUMNS} FROM walq_wal "
    f"WHERE server = %(server)s AND name = ANY(%(names)s) "
    f"AND name NOT IN (SELECT name FROM claimed)"
)


def _record(row: tuple) -> WalRecord:
    values = list(row)
    values[2] = WalState(values[2])
    return WalRecord(*values)


def _archive_stored(conn: psycopg.Connection, server: str, names: list[str]) -> list[str]:
    """Move the named stored rows to ``archived`` (inside the caller's fenced transaction)."""
    rows = conn.execute(
        f"UPDATE walq_wal SET state = 'archived', archived_at = {NOW}, deadline = NULL, "
        "last_error = NULL WHERE server = %s AND name = ANY(%s) AND state = 'claimed' "
        "AND stored_at IS NOT NULL RETURNING name",
        (server, list(names)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _first_line(exc: BaseException, url: str = "") -> str:
    text = str(exc).strip()
    return mask_secrets(text.splitlines()[0], *url_passwords(url)) if text else type(exc).__name__


def _probe(url: str) -> None:
    """Connect once, before the pool: a bad or unreachable catalog_url fails within
    CONNECT_TIMEOUT with libpq's reason (masked), where the pool would retry quietly
    for its whole timeout and then only say that it timed out."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        raise ConfigError(f"catalog_url: cannot connect: {_first_line(exc, url)}") from None


class PostgresCatalog:
    """Catalog in a PostgreSQL database; a small connection pool per process.

    Create it after a fork (Celery's worker_process_init), never before: a
    pool's sockets must not be shared between processes.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 4, migrate: bool = True
    ) -> None:
        self.url = url
        _probe(url)
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=30,
            kwargs={"autocommit": True},
            name="walq-catalog",
        )
        try:
            self.pool.open(wait=True, timeout=3 * CONNECT_TIMEOUT)
        except Exception as exc:  # any failure here is a config problem to report
            self.pool.close()
            raise ConfigError(f"catalog_url: cannot connect: {_first_line(exc, url)}") from None
        if migrate:
            self.migrate()

    # -- schema -------------------------------------------------------------
    def schema_version(self) -> int:
        with self.pool.connection() as conn:
            exists = _only_row(
                conn.execute("SELECT to_regclass('walq_schema') IS NOT NULL").fetchone()
            )[0]
            if not exists:
                return 0
            row = _only_row(conn.execute("SELECT max(version) FROM walq_schema").fetchone())
            return int(row[0] or 0)

    def migrate(self) -> int:
        """Bring the schema to the newest version (idempotent, safe when run concurrently)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS walq_schema (version integer PRIMARY KEY)")
            current = _only_row(
                conn.execute("SELECT coalesce(max(version), 0) FROM walq_schema").fetchone()
            )[0]
            for version, ddl in enumerate(MIGRATIONS, 1):
                if version > current:
                    conn.execute(sql.SQL(ddl))
                    conn.execute("INSERT INTO walq_schema (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)

    # -- helpers ------------------------------------------------------------
    def _exec(self, query: str, params: tuple | dict[str, Any] = ()) -> list[tuple]:
        try:
            with self.pool.connection() as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        except pg_errors.OperationalError as exc:
            raise TransientError(f"catalog unavailable: {_first_line(exc, self.url)}") from exc

    # -- the Catalog protocol ------------------------------------------------
    def claim(
        self, server: str, name: str, source_path: str, timeout: float, *, steal: bool = False
    ) -> bool:
        rows = self._exec(
            f"INSERT INTO walq_wal AS w (server, name, state, source_path, claimed_at, deadline) "
            f"VALUES (%s, %s, 'claimed', %s, {NOW}, {NOW} + %s) "
            f"ON CONFLICT (server, name) DO UPDATE SET source_path = EXCLUDED.source_path, "
            f"claimed_at = EXCLUDED.claimed_at, deadline = EXCLUDED.deadline, stored_at = NULL "
            f"WHERE w.state = 'claimed' AND (%s OR coalesce(w.deadline, 0) <= EXCLUDED.claimed_at) "
            f"RETURNING 1",
            (server, name, source_path, timeout, steal),
        )
        return bool(rows)

    def claim_many(
        self,
        server: str,
        candidates: list[tuple[str, str]],
        timeout: float,
        *,
        steal: bool = False,
    ) -> Claims:
        wanted = unique_candidates(candidates)
        if not wanted:
            return Claims([], {})
        rows = self._exec(
            _CLAIM_MANY,
            {
                "server": server,
                "names": [name for name, _ in wanted],
                "sources": [source for _, source in wanted],
                "timeout": timeout,
                "steal": steal,
            },
        )
        claimed = sorted(row[2] for row in rows if row[0])
        others = {row[2]: _record(row[1:]) for row in rows if not row[0]}
        return Claims(claimed, others)

    def extend(self, server: str, name: str, timeout: float) -> None:
        self._exec(
            f"UPDATE walq_wal SET deadline = {NOW} + %s WHERE server = %s AND name = %s AND state = 'claimed'",
            (timeout, server, name),
        )

    def release(self, server: str, name: str, error: str) -> None:
        self._exec(
            f"UPDATE walq_wal SET deadline = {NOW}, attempts = attempts + 1, last_error = %s "
            f"WHERE server = %s AND name = %s AND state = 'claimed'",
            (error, server, name),
        )

    def mark_failed(
        self, server: str, name: str, error: str, source_path: str | None = None
    ) -> None:
        self._exec(
            "INSERT INTO walq_wal AS w (server, name, state, source_path, attempts, last_error) "
            "VALUES (%s, %s, 'failed', %s, 1, %s) "
            "ON CONFLICT (server, name) DO UPDATE SET state = 'failed', attempts = w.attempts + 1, "
            "last_error = EXCLUDED.last_error, source_path = coalesce(EXCLUDED.source_path, w.source_path), "
            "deadline = NULL WHERE w.state NOT IN ('archived', 'expired')",
            (server, name, source_path, error),
        )

    def mark_archived(
        self, server: str, name: str, info: ArchivedInfo, fence: int | None = None
    ) -> None:
        try:
            with self.pool.connection() as conn, conn.transaction():
                if fence is not None:
                    _advance_fence(conn, server, fence, f"commit of {name} refused")
                row = conn.execute(
                    "SELECT state FROM walq_wal WHERE server = %s AND name = %s FOR UPDATE",
                    (server, name),
                ).fetchone()
                check_transition(server, name, row[0] if row else None, WalState.ARCHIVED)
                columns, values = info.assignments("%s")
                conn.execute(
                    f"UPDATE walq_wal SET state = 'archived', {columns}, archived_at = {NOW}, "
                    "deadline = NULL, last_error = NULL "
                    "WHERE server = %s AND name = %s AND state = 'claimed'",
                    (*values, server, name),
                )
        except pg_errors.OperationalError as exc:
            raise TransientError(f"catalog unavailable: {_first_line(exc, self.url)}") from exc

    def mark_stored(self, server: str, name: str, info: ArchivedInfo, timeout: float) -> bool:
        columns, values = info.assignments("%s")
        rows = self._exec(
            f"UPDATE walq_wal SET {columns}, stored_at = {NOW}, deadline = {NOW} + %s "
            "WHERE server = %s AND name = %s AND state = 'claimed' RETURNING 1",
            (*values, timeout, server, name),
        )
        return bool(rows)

    def commit_candidates(self, server: str) -> list[WalRecord]:
        return self.records(server, WalState.CLAIMED)

    def commit_stored(self, server: str, names: list[str], fence: int | None = None) -> list[str]:
        try:
            with self.pool.connection() as conn, conn.transaction():
                if fence is not None:
                    _advance_fence(conn, server, fence, "commit refused")
                return _archive_stored(conn, server, names)
        except pg_errors.OperationalError as exc:
            raise TransientError(f"catalog unavailable: {_first_line(exc, self.url)}") from exc

    def commit_ready(
        self,
        server: str,
        choose: Callable[[list[WalRecord]], list[str]],
        fence: int | None = None,
    ) -> list[str]:
        try:
            with self.pool.connection() as conn, conn.transaction():
                rows = conn.execute(
                    _SELECT + " WHERE server = %s AND state = 'claimed' ORDER BY name", (server,)
                ).fetchall()
                names = choose([_record(r) for r in rows])
                if not names:
                    return []
                if fence is not None:
                    _advance_fence(conn, server, fence, "commit refused")
                return _archive_stored(conn, server, names)
        except pg_errors.OperationalError as exc:
            raise TransientError(f"catalog unavailable: {_first_line(exc, self.url)}") from exc

    def mark_expired(
        self, server: str, names: list[str], reason: str, fence: int | None = None
    ) -> list[str]:
        try:
            with self.pool.connection() as conn, conn.transaction():
                if fence is not None:
                    _advance_fence(conn, server, fence, "expiry refused")
                rows: dict[str, str] = dict(
                    conn.execute(
                        "SELECT name, state FROM walq_wal WHERE server = %s AND name = ANY(%s) FOR UPDATE",
                        (server, list(names)),
                    ).fetchall()
                )
                moved = []
                for name in names:
                    state = rows.get(name)
                    if state == WalState.EXPIRED:
                        continue
                    check_transition(server, name, state, WalState.EXPIRED)
                    moved.append(name)
                conn.execute(
                    f"UPDATE walq_wal SET state = 'expired', expired_at = {NOW}, reason = %s "
                    f"WHERE server = %s AND name = ANY(%s) AND state = 'archived'",
                    (reason, server, moved),
                )
                return moved
        except pg_errors.OperationalError as exc:
            raise TransientError(f"catalog unavailable: {_first_line(exc, self.url)}") from exc

    def get(self, server: str, name: str) -> WalRecord | None:
        rows = self._exec(_SELECT + " WHERE server = %s AND name = %s", (server, name))
        return _record(rows[0]) if rows else None

    def records(self, server: str, state: WalState | None = None) -> list[WalRecord]:
        if state is None:
            rows = self._exec(_SELECT + " WHERE server = %s ORDER BY name", (server,))
        else:
            rows = self._exec(
                _SELECT + " WHERE server = %s AND state = %s ORDER BY name", (server, str(state))
            )
        return [_record(r) for r in rows]

    def archived_names(self, server: str) -> list[str]:
        rows = self._exec(
            "SELECT name FROM walq_wal WHERE server = %s AND state = 'archived' ORDER BY name",
            (server,),
        )
        return [r[0] for r in rows]

    def counts(self, server: str) -> dict[str, int]:
        counts = {s.value: 0 for s in WalState}
        rows = self._exec(
            "SELECT state, count(*) FROM walq_wal WHERE server = %s GROUP BY state", (server,)
        )
        counts.update({state: int(n) for state, n in rows})
        return counts

    def summary(self, server: str) -> ArchiveSummary:
        return summary_from_row(_only_row(tuple(self._exec(_SUMMARY, (server,))[0])))

    def reset_failed(self, server: str, names: list[str] | None = None) -> list[str]:
        if names is None:
            rows = self._exec(
                f"UPDATE walq_wal SET state = 'claimed', deadline = {NOW}, claimed_at = {NOW} "
                f"WHERE server = %s AND state = 'failed' RETURNING name",
                (server,),
            )
        else:
            rows = self._exec(
                f"UPDATE walq_wal SET state = 'claimed', deadline = {NOW}, claimed_at = {NOW} "
                f"WHERE server = %s AND state = 'failed' AND name = ANY(%s) RETURNING name",
                (server, list(names)),
            )
        return sorted(r[0] for r in rows)

    def get_meta(self, server: str, key: str) -> str | None:
        rows = self._exec(
            "SELECT value FROM walq_meta WHERE server = %s AND key = %s", (server, key)
        )
        return rows[0][0] if rows else None

    def set_meta(self, server: str, key: str, value: str) -> None:
        self._exec(
            "INSERT INTO walq_meta (server, key, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (server, key) DO UPDATE SET value = EXCLUDED.value",
            (server, key, value),
        )

    def close(self) -> None:
        self.pool.close()


def _only_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, or a row upserted just before)."""
    if row is None:
        raise TransientError("catalog: a query that always returns a row returned none")
    return row


def _advance_fence(conn: psycopg.Connection[Any], server: str, fence: int, refused: str) -> None:
    """Inside the caller's transaction: refuse a token older than the newest one seen
    for this server (FencedError), else make it the newest."""
    conn.execute(
        "INSERT INTO walq_fence (server, token) VALUES (%s, %s) ON CONFLICT (server) DO NOTHING",
        (server, fence),
    )
    row = conn.execute(
        "SELECT token FROM walq_fence WHERE server = %s FOR UPDATE", (server,)
    ).fetchone()
    newest = _only_row(row)[0]
    if fence < newest:
        raise FencedError(f"{refused}: fencing token {fence} is older than {newest}")
    conn.execute("UPDATE walq_fence SET token = %s WHERE server = %s", (fence, server))
