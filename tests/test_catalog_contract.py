"""One contract, every catalog: SqliteCatalog and PostgresCatalog must agree."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.catalog_rows import archived_info
from tests.services.fleet import fresh_schema_url
from walq.catalog.base import TRANSITIONS, Catalog, WalState
from walq.catalog.postgres import PostgresCatalog
from walq.catalog.sqlite import SqliteCatalog
from walq.errors import FencedError, PermanentError, TransitionError

W1, W2, W3 = "000000010000000000000001", "000000010000000000000002", "000000010000000000000003"
INFO = archived_info(
    size=16,
    stored_size=8,
    codec="zstd",
    checksum="ab" * 32,
    storage_key="0000000100000000/" + W1,
    mtime=1.5,
)


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        cat: Catalog = SqliteCatalog(tmp_path / "catalog.sqlite")
    else:
        cat = PostgresCatalog(fresh_schema_url(request.getfixturevalue("catalog_db")))
    yield cat
    cat.close()


def test_claim_once_until_deadline(catalog: Catalog) -> None:
    assert catalog.claim("pg1", W1, "/in/" + W1, 60)
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60), "a live claim is not given twice"
    assert catalog.claim("pg1", W1, "/in/" + W1, 60, steal=True)
    assert catalog.claim("pg2", W1, "/in/" + W1, 60), "servers are independent"
    assert catalog.get("pg1", W1).state is WalState.CLAIMED


def test_stalled_claim_is_reclaimable(catalog: Catalog) -> None:
    assert catalog.claim("pg1", W1, "/in/" + W1, 0.0)
    assert catalog.claim("pg1", W1, "/in/" + W1, 60), "a claim past its deadline is given again"
    catalog.extend("pg1", W1, 60)
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60)


def test_release_counts_attempt_and_reopens(catalog: Catalog) -> None:
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.release("pg1", W1, "storage unreachable")
    rec = catalog.get("pg1", W1)
    assert rec.attempts == 1 and rec.last_error == "storage unreachable"
    assert catalog.claim("pg1", W1, "/in/" + W1, 60)


def test_archive_and_fence(catalog: Catalog) -> None:
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.mark_archived("pg1", W1, INFO, fence=5)
    rec = catalog.get("pg1", W1)
    assert rec.state is WalState.ARCHIVED and rec.checksum == INFO.checksum and rec.deadline is None
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60), "archived WALs are never claimed again"
    catalog.claim("pg1", W2, "/in/" + W2, 60)
    catalog.mark_archived("pg1", W2, INFO, fence=5)  # the same holder commits again
    catalog.claim("pg1", W3, "/in/" + W3, 60)
    with pytest.raises(FencedError):
        catalog.mark_archived("pg1", W3, INFO, fence=4)
    assert catalog.get("pg1", W3).state is WalState.CLAIMED, "a fenced commit writes nothing"
    catalog.claim("pg2", W3, "/in/" + W3, 60)
    catalog.mark_archived("pg2", W3, INFO, fence=1)  # fences are per server
    assert catalog.archived_names("pg1") == [W1, W2]


def test_failed_and_reset(catalog: Catalog) -> None:
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.mark_failed("pg1", W1, "bad header", "/errors/x")
    catalog.mark_failed("pg1", W2, "unwritable")
    catalog.claim("pg1", W3, "/in/" + W3, 60)
    catalog.mark_archived("pg1", W3, INFO)
    catalog.mark_failed("pg1", W3, "late")  # never demotes an archived WAL
    assert [r.name for r in catalog.records("pg1", WalState.FAILED)] == [W1, W2]
    assert catalog.get("pg1", W1).source_path == "/errors/x"
    assert catalog.counts("pg1") == {"claimed": 0, "archived": 1, "failed": 2, "expired": 0}
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60), "failed WALs wait for an operator"
    assert catalog.reset_failed("pg1", [W2, W3]) == [W2]
    assert catalog.reset_failed("pg1") == [W1]
    assert catalog.claim("pg1", W1, "/in/" + W1, 60)
    assert catalog.get("pg1", W3).state is WalState.ARCHIVED


def test_the_allowed_transitions() -> None:
    """claimed -> archived | failed; failed -> claimed (an operator's retry); archived -> expired
    (retention); expired is terminal."""
    allowed = {state: set(targets) for state, targets in TRANSITIONS.items()}
    assert allowed == {
        None: {WalState.CLAIMED, WalState.FAILED},
        WalState.CLAIMED: {WalState.CLAIMED, WalState.ARCHIVED, WalState.FAILED},
        WalState.FAILED: {WalState.CLAIMED},
        WalState.ARCHIVED: {WalState.EXPIRED},
        WalState.EXPIRED: set(),
    }
    assert issubclass(TransitionError, PermanentError)


FORGED = archived_info(checksum="cd" * 32, storage_key="/etc/passwd", mtime=9.0)


def test_commit_lands_only_on_a_claimed_row(catalog: Catalog) -> None:
    """A commit for a WAL nobody claimed creates nothing, and does not move the fence."""
    with pytest.raises(TransitionError, match="no catalog row"):
        catalog.mark_archived("pg1", W1, FORGED, fence=100)
    assert catalog.get("pg1", W1) is None
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.mark_archived("pg1", W1, INFO, fence=1)  # the refused commit's fence was rolled back
    assert catalog.get("pg1", W1).state is WalState.ARCHIVED


def test_archived_row_is_never_overwritten(catalog: Catalog) -> None:
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.mark_archived("pg1", W1, INFO, fence=1)
    before = catalog.get("pg1", W1)
    for fence in (None, 1, 2):
        with pytest.raises(TransitionError, match="is archived"):
            catalog.mark_archived("pg1", W1, FORGED, fence=fence)
    after = catalog.get("pg1", W1)
    assert (
        after == before
        and after.storage_key == INFO.storage_key
        and after.checksum == INFO.checksum
    )


def test_failed_row_is_archived_only_after_a_retry(catalog: Catalog) -> None:
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    catalog.mark_failed("pg1", W1, "bad header")
    with pytest.raises(TransitionError, match="is failed"):
        catalog.mark_archived("pg1", W1, INFO)
    row = catalog.get("pg1", W1)
    assert (
        row.state is WalState.FAILED and row.storage_key is None and row.last_error == "bad header"
    )
    assert catalog.reset_failed("pg1", [W1]) == [W1]  # failed -> claimed
    catalog.mark_archived("pg1", W1, INFO)  # claimed -> archived
    assert catalog.get("pg1", W1).state is WalState.ARCHIVED


def test_meta(catalog: Catalog) -> None:
    assert catalog.get_meta("pg1", "system_identifier") is None
    catalog.set_meta("pg1", "system_identifier", "42")
    catalog.set_meta("pg1", "system_identifier", "43")
    assert catalog.get_meta("pg1", "system_identifier") == "43"
    assert catalog.get_meta("pg2", "system_identifier") is None


def test_postgres_claims_race(catalog_db: str) -> None:
    """Eight threads with their own pools race for 50 WALs: each is claimed exactly once."""
    url = fresh_schema_url(catalog_db)
    catalogs = [PostgresCatalog(url, max_size=1) for _ in range(8)]
    names = [f"0000000100000000000000{i:02X}" for i in range(50)]
    won: list[str] = []
    lock = threading.Lock()

    def run(cat: PostgresCatalog) -> None:
        for name in names:
            if cat.claim("pg1", name, "/in/" + name, 60):
                with lock:
                    won.append(name)

    threads = [threading.Thread(target=run, args=(c,)) for c in catalogs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in catalogs:
        c.close()
    assert sorted(won) == names


W4, W5 = "000000010000000000000004", "000000010000000000000005"


def test_claim_many_follows_claims_rules_row_by_row(catalog: Catalog) -> None:
    """One scan's claim: new rows and lapsed claims are claimed; a live claim, an
    archived and a failed WAL are not, and come back as the rows they are; nothing
    moves against TRANSITIONS (archived and failed rows keep their state)."""
    catalog.claim("pg1", W1, "/in/" + W1, 60)  # live: another chain has it
    catalog.claim("pg1", W2, "/in/" + W2, 0.0)  # lapsed: a stalled chain
    _archived(catalog, W3)
    catalog.mark_failed("pg1", W4, "bad header", "/in/" + W4)
    claims = catalog.claim_many("pg1", [(n, "/streaming/" + n) for n in (W5, W4, W3, W2, W1)], 60)
    assert claims.claimed == [W2, W5]
    assert {n: r.state for n, r in claims.others.items()} == {
        W1: WalState.CLAIMED,
        W3: WalState.ARCHIVED,
        W4: WalState.FAILED,
    }
    assert claims.others[W3].checksum == INFO.checksum, "the others come back as whole rows"
    assert catalog.get("pg1", W2).source_path == "/streaming/" + W2
    assert catalog.get("pg1", W5).state is WalState.CLAIMED
    assert catalog.get("pg1", W3).state is WalState.ARCHIVED
    assert catalog.get("pg1", W4).state is WalState.FAILED
    again = catalog.claim_many("pg1", [(W5, "/in/" + W5), (W2, "/in/" + W2)], 60)
    assert again.claimed == [] and set(again.others) == {W2, W5}, "live claims are not given twice"
    assert catalog.claim_many("pg1", [(W1, "/in/" + W1)], 60, steal=True).claimed == [W1]
    assert catalog.claim_many("pg2", [(W1, "/in/" + W1)], 60).claimed == [W1], "per server"
    assert catalog.claim_many("pg1", [], 60).claimed == []


def test_claim_many_clears_a_reclaimed_rows_stored_mark(catalog: Catalog) -> None:
    """A lapsed claim whose object was stored is claimed afresh, as claim does: the new
    chain must store (or adopt) again before a commit can take the row."""
    catalog.claim("pg1", W1, "/in/" + W1, 60)
    assert catalog.mark_stored("pg1", W1, INFO, 0.0)
    assert catalog.claim_many("pg1", [(W1, "/in/" + W1)], 60).claimed == [W1]
    assert catalog.get("pg1", W1).stored_at is None
    assert catalog.commit_stored("pg1", [W1]) == []


def test_claim_many_takes_a_name_given_twice_once(catalog: Catalog) -> None:
    """A WAL in both streaming/ and incoming/: one claim, with the first path given."""
    claims = catalog.claim_many("pg1", [(W1, "/streaming/" + W1), (W1, "/in/" + W1)], 60)
    assert claims.claimed == [W1] and claims.others == {}
    assert catalog.get("pg1", W1).source_path == "/streaming/" + W1


def test_commit_ready_commits_what_choose_picks_of_the_claimed_rows(catalog: Catalog) -> None:
    """The group commit's transaction: ``choose`` sees the claimed rows in WAL order;
    only stored ones it picks become archived; a stale fence or an empty pick writes
    nothing (an empty pick leaves the fence as it was)."""
    for name in (W3, W1, W2):
        catalog.claim("pg1", name, "/in/" + name, 60)
    catalog.mark_stored("pg1", W1, INFO, 60)
    catalog.mark_stored("pg1", W3, INFO, 60)
    seen: list[list[str]] = []

    def pick(*names: str):
        def choose(records):
            seen.append([r.name for r in records])
            return list(names)

        return choose

    assert catalog.commit_ready("pg1", pick(), fence=9) == []
    assert catalog.commit_ready("pg1", pick(W1), fence=5) == [W1], "an empty pick took no fence"
    assert seen == [[W1, W2, W3], [W1, W2, W3]]
    with pytest.raises(FencedError):
        catalog.commit_ready("pg1", pick(W3), fence=4)
    assert catalog.get("pg1", W3).state is WalState.CLAIMED, "a fenced commit writes nothing"
    assert catalog.commit_ready("pg1", pick(W2, W3), fence=5) == [W3], "W2 is not stored yet"
    assert catalog.archived_names("pg1") == [W1, W3]
    assert catalog.get("pg1", W2).state is WalState.CLAIMED


def test_postgres_claim_many_race(catalog_db: str) -> None:
    """Eight scans with their own pools claim overlapping batches of 50 WALs at once:
    each WAL is claimed exactly once."""
    url = fresh_schema_url(catalog_db)
    catalogs = [PostgresCatalog(url, max_size=1) for _ in range(8)]
    names = [f"0000000100000000000000{i:02X}" for i in range(50)]
    won: list[str] = []
    lock = threading.Lock()

    def run(cat: PostgresCatalog, offset: int) -> None:
        for start in range(0, 50, 10):
            batch = names[(start + offset) % 50 :][:10] + names[: max(0, start + offset + 10 - 50)]
            claims = cat.claim_many("pg1", [(n, "/in/" + n) for n in batch], 60)
            with lock:
                won.extend(claims.claimed)

    threads = [threading.Thread(target=run, args=(c, 5 * i)) for i, c in enumerate(catalogs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in catalogs:
        c.close()
    assert sorted(won) == names


def test_postgres_migrate_is_idempotent(catalog_db: str) -> None:
    url = fresh_schema_url(catalog_db)
    first = PostgresCatalog(url)
    assert first.schema_version() == len(
        __import__("walq.catalog.postgres", fromlist=["x"]).MIGRATIONS
    )
    second = PostgresCatalog(url)
    assert second.migrate() == first.schema_version()
    first.close()
    second.close()


# --- retention: the expired state ------------------------------------------------------------


def _archived(catalog: Catalog, *names: str) -> None:
    for n in names:
        catalog.claim("pg1", n, "/in/" + n, 60)
        catalog.mark_archived("pg1", n, INFO)


def test_expired_only_from_archived_in_one_transaction(catalog: Catalog) -> None:
    _archived(catalog, W1, W2)
    catalog.claim("pg1", W3, "/in/" + W3, 60)
    with pytest.raises(TransitionError):
        catalog.mark_expired("pg1", [W1, W3], "REDUNDANCY 1")
    assert catalog.get("pg1", W1).state is WalState.ARCHIVED, "a refused expiry writes nothing"
    with pytest.raises(TransitionError):
        catalog.mark_expired("pg1", ["000000010000000000000009"], "no row")
    assert catalog.mark_expired("pg1", [W1, W2], "REDUNDANCY 1: before X") == [W1, W2]
    rec = catalog.get("pg1", W1)
    assert rec.state is WalState.EXPIRED and rec.reason == "REDUNDANCY 1: before X"
    assert rec.expired_at is not None and rec.storage_key == INFO.storage_key, (
        "the row still says where it was"
    )
    assert catalog.mark_expired("pg1", [W1, W2], "again") == [], (
        "a rerun leaves expired rows as they are"
    )
    assert catalog.get("pg1", W1).reason == "REDUNDANCY 1: before X"
    assert catalog.archived_names("pg1") == []
    assert catalog.counts("pg1")["expired"] == 2
    assert [r.name for r in catalog.records("pg1", WalState.EXPIRED)] == [W1, W2]


def test_expired_rows_are_terminal(catalog: Catalog) -> None:
    _archived(catalog, W1)
    catalog.mark_expired("pg1", [W1], "gone")
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60)
    assert not catalog.claim("pg1", W1, "/in/" + W1, 60, steal=True)
    catalog.mark_failed("pg1", W1, "boom")
    assert catalog.get("pg1", W1).state is WalState.EXPIRED
    assert catalog.reset_failed("pg1") == []
    assert TRANSITIONS[WalState.EXPIRED] == frozenset()
    assert TRANSITIONS[WalState.ARCHIVED] == frozenset({WalState.EXPIRED})


def test_expiry_is_fenced(catalog: Catalog) -> None:
    _archived(catalog, W1)
    catalog.claim("pg1", W2, "/in/" + W2, 60)
    catalog.mark_archived("pg1", W2, INFO, fence=7)
    with pytest.raises(FencedError):
        catalog.mark_expired("pg1", [W1], "stale", fence=6)
    assert catalog.get("pg1", W1).state is WalState.ARCHIVED
    assert catalog.mark_expired("pg1", [W1], "fresh", fence=7) == [W1]


def test_sqlite_catalog_of_an_older_walq_gains_the_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE wal (server TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, source_path TEXT, "
        "size INTEGER, stored_size INTEGER, codec TEXT, encryption TEXT, checksum TEXT, storage_key TEXT, "
        "mtime REAL, claimed_at REAL, deadline REAL, archived_at REAL, prepare_seconds REAL, store_seconds REAL, "
        "attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (server, name));"
        f"INSERT INTO wal (server, name, state) VALUES ('pg1', '{W1}', 'archived');"
    )
    db.commit()
    db.close()
    ro = SqliteCatalog(path, readonly=True)
    assert ro.get("pg1", W1).expired_at is None
    assert ro.get("pg1", W1).checksum_algorithm is None  # read as sha256 (walq.checksums)
    ro.close()
    cat = SqliteCatalog(path)
    assert cat.mark_expired("pg1", [W1], "old") == [W1] and cat.get("pg1", W1).reason == "old"
    assert cat.get("pg1", W1).checksum_algorithm is None
    cat.claim("pg1", W2, "/in/" + W2, 60)
    cat.mark_archived("pg1", W2, archived_info(checksum_algorithm="blake3"))
    assert cat.get("pg1", W2).checksum_algorithm == "blake3"
    cat.close()


def test_postgres_schema_1_migrates_to_expiry(catalog_db: str) -> None:
    import psycopg

    from walq.catalog.postgres import MIGRATIONS

    url = fresh_schema_url(catalog_db)
    with psycopg.connect(url, autocommit=True) as conn:  # what walq with schema version 1 left
        conn.execute("CREATE TABLE walq_schema (version integer PRIMARY KEY)")
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO walq_schema VALUES (1)")
        conn.execute(
            f"INSERT INTO walq_wal (server, name, state) VALUES ('pg1', '{W1}', 'archived')"
        )
    cat = PostgresCatalog(url)
    try:
        assert cat.schema_version() == len(MIGRATIONS) >= 2
        assert cat.get("pg1", W1).expired_at is None
        assert cat.mark_expired("pg1", [W1], "migrated") == [W1]
    finally:
        cat.close()


def test_postgres_schema_2_migrates_to_checksum_algorithm(catalog_db: str) -> None:
    """Rows archived before migration 3 keep a NULL algorithm (read as sha256); new rows
    record theirs."""
    import psycopg

    from walq.catalog.postgres import MIGRATIONS

    url = fresh_schema_url(catalog_db)
    with psycopg.connect(url, autocommit=True) as conn:  # what walq with schema version 2 left
        conn.execute("CREATE TABLE walq_schema (version integer PRIMARY KEY)")
        conn.execute(MIGRATIONS[0])
        conn.execute(MIGRATIONS[1])
        conn.execute("INSERT INTO walq_schema VALUES (1), (2)")
        conn.execute(
            f"INSERT INTO walq_wal (server, name, state, checksum) "
            f"VALUES ('pg1', '{W1}', 'archived', '{'cd' * 32}')"
        )
    cat = PostgresCatalog(url)
    try:
        assert cat.schema_version() == len(MIGRATIONS) >= 3
        old = cat.get("pg1", W1)
        assert old.checksum == "cd" * 32 and old.checksum_algorithm is None
        cat.claim("pg1", W2, "/in/" + W2, 60)
        cat.mark_archived("pg1", W2, archived_info(checksum_algorithm="blake3"))
        assert cat.get("pg1", W2).checksum_algorithm == "blake3"
    finally:
        cat.close()


def test_checksum_algorithm_is_recorded_per_row(catalog: Catalog) -> None:
    """Each commit records the algorithm its checksum was taken with, row by row."""
    for name, algorithm in ((W1, "sha256"), (W2, "blake3")):
        catalog.claim("pg1", name, "/in/" + name, 60)
        catalog.mark_archived("pg1", name, archived_info(checksum_algorithm=algorithm))
    assert catalog.get("pg1", W1).checksum_algorithm == "sha256"
    assert catalog.get("pg1", W2).checksum_algorithm == "blake3"
    assert [r.checksum_algorithm for r in catalog.records("pg1", WalState.ARCHIVED)] == [
        "sha256",
        "blake3",
    ]
    catalog.claim("pg1", W3, "/in/" + W3, 60)
    assert catalog.get("pg1", W3).checksum_algorithm is None  # claimed: nothing summed yet


def test_summary_counts_every_wal_ever_archived(catalog: Catalog) -> None:
    """One aggregate for metrics: archived and expired rows count (the sums only grow);
    claimed and failed rows do not; durations fall into cumulative buckets."""
    from walq.catalog.base import DURATION_BUCKETS

    empty = catalog.summary("pg1")
    assert (empty.wals, empty.size, empty.stored_size, empty.newest_archived_at) == (0, 0, 0, None)
    assert empty.duration_buckets == (0,) * len(DURATION_BUCKETS)
    timings = {W1: (0.02, 0.01), W2: (1.0, 2.0)}
    for name, (prepare, store) in timings.items():
        catalog.claim("pg1", name, "/in/" + name, 60)
        info = archived_info(size=100, stored_size=40, prepare_seconds=prepare, store_seconds=store)
        catalog.mark_archived("pg1", name, info)
    catalog.claim("pg1", W3, "/in/" + W3, 60)
    catalog.mark_failed("pg1", "000000010000000000000004", "bad")
    catalog.claim("pg2", W1, "/in/" + W1, 60)
    catalog.mark_archived("pg2", W1, archived_info(size=7))
    catalog.mark_expired("pg1", [W1], "retention")

    got = catalog.summary("pg1")
    assert (got.wals, got.size, got.stored_size) == (2, 200, 80)
    assert got.newest_archived_at == catalog.get("pg1", W2).archived_at
    assert got.duration_sum == pytest.approx(3.03)
    expected = tuple(sum(1 for p, s in timings.values() if p + s <= b) for b in DURATION_BUCKETS)
    assert got.duration_buckets == expected and expected[0] == 0 and expected[-1] == 2
    assert catalog.summary("pg2").size == 7
