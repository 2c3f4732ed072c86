"""The catalog: walq's system of record, one row per (server, WAL).

States: ``claimed`` (found by a scan, being worked on until ``deadline``),
``archived`` (stored durably and committed), ``failed`` (parked: needs an
operator's retry), ``expired`` (retention removed it: ``expired_at`` and
``reason`` say when and why; the row stays, so its key is never forgotten). Implementations: SqliteCatalog (embedded) and
PostgresCatalog (fleet); tests/test_catalog_contract.py runs both.

A row moves only along TRANSITIONS, enforced inside each catalog's write (not by
its callers): a commit lands only on a claimed row, so a forged or stale commit
can neither create an archived row nor overwrite one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from walq.errors import TransitionError


class WalState(enum.StrEnum):
    CLAIMED = "claimed"
    ARCHIVED = "archived"
    FAILED = "failed"
    EXPIRED = "expired"


# state -> the states a row in it may move to (None: no row yet).
#   (none)   -> claimed (a scan) | failed (a file parked before it was ever claimed)
#   claimed  -> claimed (re-claim a stalled claim) | archived (commit) | failed (park)
#   failed   -> claimed (an operator's retry)
#   archived -> expired (walq expire / walq delete; the object goes after the row says so)
#   expired  -> nothing: terminal
TRANSITIONS: dict[WalState | None, frozenset[WalState]] = {
    None: frozenset({WalState.CLAIMED, WalState.FAILED}),
    WalState.CLAIMED: frozenset({WalState.CLAIMED, WalState.ARCHIVED, WalState.FAILED}),
    WalState.FAILED: frozenset({WalState.CLAIMED}),
    WalState.ARCHIVED: frozenset({WalState.EXPIRED}),
    WalState.EXPIRED: frozenset(),
}


def check_transition(
    server: str, name: str, current: WalState | str | None, target: WalState
) -> None:
    """Raise TransitionError unless a row in ``current`` may move to ``target``."""
    state = WalState(current) if current is not None else None
    if target not in TRANSITIONS[state]:
        where = f"is {state}" if state is not None else "has no catalog row"
        raise TransitionError(f"{server}/{name} {where}; it cannot become {target}")


@dataclass(frozen=True, slots=True)
class ArchivedInfo:
    """What a commit records about a stored WAL."""

    size: int  # uncompressed bytes
    stored_size: int
    codec: str
    encryption: str  # 'none' | 'gpg'
    checksum: str  # hex digest of the uncompressed bytes
    checksum_algorithm: str  # walq.checksums: what took ``checksum``
    storage_key: str
    mtime: float
    prepare_seconds: float = 0.0
    store_seconds: float = 0.0

    def assignments(self, placeholder: str) -> tuple[str, tuple[object, ...]]:
        """``col = ?, ...`` for an UPDATE and its values, in field order: both catalogs
        record a commit from this one list."""
        names = ArchivedInfo.__slots__
        return ", ".join(f"{n} = {placeholder}" for n in names), tuple(
            getattr(self, n) for n in names
        )


@dataclass(frozen=True, slots=True)
class WalRecord:
    server: str
    name: str
    state: WalState
    source_path: str | None
    size: int | None
    stored_size: int | None
    codec: str | None
    encryption: str | None
    checksum: str | None
    storage_key: str | None
    mtime: float | None
    claimed_at: float | None
    deadline: float | None
    archived_at: float | None
    prepare_seconds: float | None
    store_seconds: float | None
    attempts: int
    last_error: str | None
    expired_at: float | None = None
    reason: str | None = None  # why the row expired (retention's reason)
    stored_at: float | None = None  # fleet: a claimed row whose object is stored, awaiting commit
    # what took ``checksum`` (walq.checksums); None on a row older than the column: sha256
    checksum_algorithm: str | None = None

    COLUMNS = [
        "server",
        "name",
        "state",
        "source_path",
        "size",
        "stored_size",
        "codec",
        "encryption",
        "checksum",
        "storage_key",
        "mtime",
        "claimed_at",
        "deadline",
        "archived_at",
        "prepare_seconds",
        "store_seconds",
        "attempts",
        "last_error",
        "expired_at",
        "reason",
        "stored_at",
        "checksum_algorithm",
    ]


@dataclass(frozen=True, slots=True)
class Claims:
    """What one ``claim_many`` did: the names it claimed (in WAL order) and, for every
    other candidate that has a row, that row as the claim found it (a live claim, an
    archived or failed WAL): what a scan needs without reading a row per WAL."""

    claimed: list[str]
    others: dict[str, WalRecord]


def unique_candidates(candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A scan's ``(name, source_path)`` pairs once per name (its first source path), in
    WAL order: every claim_many takes its rows' locks in the same order."""
    first: dict[str, str] = {}
    for name, source in candidates:
        first.setdefault(name, source)
    return sorted(first.items())


# Upper bounds (seconds) of the archive-duration histogram `walq metrics` exposes.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """Every WAL a server ever archived (rows ``archived`` or ``expired``), in one aggregate
    query: what metrics need per scrape without reading a row per WAL. The sums only grow
    (an expired row keeps its sizes and durations), so they are Prometheus counters."""

    wals: int
    size: int  # plain bytes
    stored_size: int
    newest_archived_at: float | None
    duration_sum: float  # prepare_seconds + store_seconds, summed
    duration_buckets: tuple[int, ...]  # cumulative counts for DURATION_BUCKETS (then +Inf: wals)


def summary_sql(table: str, placeholder: str) -> str:
    """The aggregate query behind ``Catalog.summary``, shared by both catalogs."""
    duration = "coalesce(prepare_seconds, 0) + coalesce(store_seconds, 0)"
    buckets = ", ".join(
        f"coalesce(sum(CASE WHEN {duration} <= {bound!r} THEN 1 ELSE 0 END), 0)"
        for bound in DURATION_BUCKETS
    )
    return (
        f"SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0), "
        f"max(archived_at), coalesce(sum({duration}), 0), {buckets} FROM {table} "
        f"WHERE server = {placeholder} AND state IN ('archived', 'expired')"
    )


def summary_from_row(row: tuple) -> ArchiveSummary:
    wals, size, stored, newest, duration, *buckets = row
    return ArchiveSummary(
        int(wals),
        int(size),
        int(stored),
        None if newest is None else float(newest),
        float(duration),
        tuple(int(b) for b in buckets),
    )


class Catalog(Protocol):
    def claim(
        self, server: str, name: str, source_path: str, timeout: float, *, steal: bool = False
    ) -> bool:
        """Claim a WAL for work. True for a new row, for a claim past its deadline,
        or (``steal``: the caller holds the only lock) any claimed row.
        False while another worker's claim is live, or once archived/failed."""
        ...

    def claim_many(
        self,
        server: str,
        candidates: list[tuple[str, str]],
        timeout: float,
        *,
        steal: bool = False,
    ) -> Claims:
        """``claim`` for every ``(name, source_path)`` of one scan, in one transaction (one
        statement on PostgreSQL): each row follows claim's rules. A name given twice is
        claimed at most once, with its first source path."""
        ...

    def extend(self, server: str, name: str, timeout: float) -> None:
        """Push a live claim's deadline forward (progress heartbeat)."""
        ...

    def release(self, server: str, name: str, error: str) -> None:
        """Transient failure: keep the row claimable by the next scan, count the attempt."""
        ...

    def mark_failed(
        self, server: str, name: str, error: str, source_path: str | None = None
    ) -> None:
        """Permanent failure: park the WAL with its reason (creates the row if needed)."""
        ...

    def mark_archived(
        self, server: str, name: str, info: ArchivedInfo, fence: int | None = None
    ) -> None:
        """Commit a claimed row. Raises FencedError when ``fence`` is older than one
        already seen, TransitionError when the row is missing or not claimed (an
        archived row is never overwritten); either way nothing is written."""
        ...

    def mark_stored(self, server: str, name: str, info: ArchivedInfo, timeout: float) -> bool:
        """Fleet group commit: record what store wrote on a claimed row (still ``claimed``,
        with ``stored_at`` set) and push its deadline; False if the row is not claimed."""
        ...

    def commit_candidates(self, server: str) -> list[WalRecord]:
        """The server's claimed rows in WAL order, stored or still in flight."""
        ...

    def commit_stored(self, server: str, names: list[str], fence: int | None = None) -> list[str]:
        """In one transaction, move these stored claimed rows to ``archived``; returns the
        names moved (a row no longer claimed and stored is skipped). FencedError as for
        mark_archived, and then nothing is written."""
        ...

    def commit_ready(
        self,
        server: str,
        choose: Callable[[list[WalRecord]], list[str]],
        fence: int | None = None,
    ) -> list[str]:
        """commit_candidates, then commit_stored of the names ``choose`` picks from them:
        one transaction on PostgreSQL (the group commit's one per batch). Returns the
        names moved; nothing is written (and the fence is not touched) when ``choose``
        picks none."""
        ...

    def mark_expired(
        self, server: str, names: list[str], reason: str, fence: int | None = None
    ) -> list[str]:
        """In one transaction, move archived rows to ``expired`` with the time and
        ``reason``; returns the names it moved. Rows already expired are left as they
        are (a rerun); any other state, or no row, raises TransitionError and nothing
        is written. FencedError as for mark_archived."""
        ...

    def get(self, server: str, name: str) -> WalRecord | None: ...

    def records(self, server: str, state: WalState | None = None) -> list[WalRecord]: ...

    def archived_names(self, server: str) -> list[str]: ...

    def counts(self, server: str) -> dict[str, int]: ...

    def summary(self, server: str) -> ArchiveSummary:
        """Counts, byte sums, newest archive time and the duration histogram of every WAL
        the server ever archived (one aggregate query; the ``(server, state)`` index)."""
        ...

    def reset_failed(self, server: str, names: list[str] | None = None) -> list[str]:
        """Make failed WALs claimable again; returns the names reset."""
        ...

    def get_meta(self, server: str, key: str) -> str | None: ...

    def set_meta(self, server: str, key: str, value: str) -> None: ...

    def close(self) -> None: ...
