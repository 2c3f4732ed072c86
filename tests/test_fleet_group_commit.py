"""The fleet's group commit without a broker (SQLite catalog, file lock): stored WALs
are committed in WAL order, one batch per commit, and a missing predecessor holds
later WALs back only for a bounded time."""

from __future__ import annotations

from dataclasses import replace

from tests.services.homes import WalqHome, xlogdb_names
from walq.catalog import WalRecord, WalState
from walq.fleet import commit as group
from walq.fleet import stages as fleet


def _store(rt: fleet.Runtime, job: dict) -> None:
    fleet.store_and_mark_stage(rt, fleet.encrypt_stage(rt, fleet.compress_stage(rt, job)))


def test_group_commit_goes_in_wal_order_and_waits_for_a_predecessor(make_home, wal_corpus) -> None:
    home: WalqHome = make_home(claim_timeout=60.0)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    rt = fleet.Runtime(home.config)
    jobs = fleet.scan_server(rt, "pg1")
    for i in (3, 0, 2):  # the second WAL is still in flight
        _store(rt, jobs[i])
    first = group.commit_server(rt, "pg1")
    assert first.committed == names[:1]
    assert first.held == 2 and first.again_in is not None and first.again_in > 0
    assert rt.catalog.get("pg1", names[2]).state is WalState.CLAIMED
    assert (home.incoming() / names[2]).exists(), "a held WAL keeps its source"
    _store(rt, jobs[1])
    second = group.commit_server(rt, "pg1")
    assert second.committed == names[1:] and second.held == 0
    assert xlogdb_names(home.wals()) == names, "one append per batch, in WAL order"
    assert rt.catalog.archived_names("pg1") == names
    assert list(home.incoming().iterdir()) == []
    assert group.commit_server(rt, "pg1").committed == [], "nothing left: a rerun is harmless"
    rt.close()


def _row(name: str, stored_at: float | None, claimed_at: float = 0.0) -> WalRecord:
    blank = WalRecord(*(["pg1", name, WalState.CLAIMED] + [None] * 13 + [0, None]))
    return replace(blank, stored_at=stored_at, claimed_at=claimed_at)


def test_a_missing_predecessor_holds_later_wals_back_only_for_the_wait() -> None:
    rows = [_row("A", 100.0), _row("B", None), _row("C", 105.0), _row("D", 130.0)]
    commit, held, again = group.ready(rows, now=110.0, wait=30.0)
    assert [r.name for r in commit] == ["A"] and held == 2 and again == 25.0
    commit, held, again = group.ready(rows, now=136.0, wait=30.0)  # C waited 31 s: C goes
    assert [r.name for r in commit] == ["A", "C"] and held == 1 and again == 24.0
    commit, held, again = group.ready(rows, now=200.0, wait=30.0)
    assert [r.name for r in commit] == ["A", "C", "D"] and held == 0 and again is None


def test_a_redelivered_store_after_the_mark_still_gets_its_commit(make_home, wal_corpus) -> None:
    """A worker killed after marking the WAL stored (its spool already dropped): the
    redelivered store must not stop quietly, or nobody asks for the commit."""
    home: WalqHome = make_home(claim_timeout=60.0)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    job = fleet.scan_server(rt, "pg1")[0]
    prepared = fleet.encrypt_stage(rt, fleet.compress_stage(rt, job))
    fleet.store_and_mark_stage(rt, prepared)
    again = fleet.store_and_mark_stage(rt, prepared)  # the same message, delivered again
    assert again["wal"] == names[0] and not again.get("already_archived")
    assert group.commit_server(rt, "pg1").committed == names
    assert xlogdb_names(home.wals()) == names
    rt.close()
