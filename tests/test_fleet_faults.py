"""Faults in a running fleet: kill -9 in every stage, a lock holder frozen past its
TTL, Redis restarted mid-run, two beat processes. Real Redis, real PostgreSQL
catalog, real Celery worker processes; after each run every WAL is archived
exactly once and none is lost.

Where a stage must be hit exactly, walq.fleet.fault_point makes the worker that
reaches it stop itself with a real SIGSTOP and publish its pid; the test then
sends the real signal (SIGKILL, or SIGCONT later) from outside.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.services.fleet import (
    assert_archived_once,
    pending,
    process_state,
    read_pid,
)
from tests.services.gpg import gpg_settings
from tests.services.homes import xlogdb_names
from tests.services.pg import wait_for
from walq import keys
from walq.catalog import open_catalog


def _wait_archived(catalog, fleet, names: list[str], timeout: float = 180) -> None:
    try:
        wait_for(
            lambda: (
                catalog.archived_names("pg1") == names and catalog.counts("pg1")["claimed"] == 0
            ),
            timeout,
            "every WAL to be archived",
            0.25,
        )
    except TimeoutError:
        raise AssertionError(
            f"archived {len(catalog.archived_names('pg1'))}/{len(names)}\n{fleet.logs()}"
        ) from None


def _wait_archived_once(home, fleet, names: list[str]) -> None:
    catalog = open_catalog(home.config)
    try:
        _wait_archived(catalog, fleet, names)
        # a source left behind a commit (killed before removing it) goes at the next scan
        wait_for(lambda: not pending(home.incoming()), 90, "the sources to be settled", 0.25)
        assert_archived_once(home, catalog, names)
    finally:
        catalog.close()


def _frozen_at(fault_dir: Path, stage: str, fleet) -> int:
    try:
        pid = wait_for(
            lambda: read_pid(fault_dir / f"{stage}.pid"), 90, f"a worker to reach {stage}", 0.1
        )
        wait_for(lambda: process_state(pid) == "T", 30, f"pid {pid} to stop", 0.05)
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None
    return pid


STAGE_TASKS = {
    "compress": "walq.compress",
    "encrypt": "walq.encrypt",
    "store": "walq.store",
    "commit": "walq.commit_server",
    "commit-removal": "walq.commit_server",
}


def _requeued(logs: str, task: str) -> list[str]:
    """Ids of ``task`` received more often than a run of theirs ended: a run was killed
    under the message and the same message (same task id) was delivered again. A retry
    also reuses the id, but its first run ends with a ``retry`` line."""
    received = Counter(re.findall(rf"Task {re.escape(task)}\[([^\]]+)\] received", logs))
    return [i for i in _unfinished(logs, task) if received[i] >= 2]


def _unfinished(logs: str, task: str) -> list[str]:
    """Ids of ``task`` received more often than a run of theirs ended."""
    name = re.escape(task)
    received = Counter(re.findall(rf"Task {name}\[([^\]]+)\] received", logs))
    ended = Counter(
        re.findall(rf"Task {name}\[([^\]]+)\] (?:succeeded|raised|retry|ignored)", logs)
    )
    return [i for i, n in received.items() if n > ended[i]]


def _chains_per_wal(logs: str) -> dict[str, set[str]]:
    """WAL -> the chain ids its compress tasks carried (a scan's re-drive is a new chain)."""
    chains: dict[str, set[str]] = {}
    for wal, chain_id in re.findall(
        r"walq\.compress\[pg1\.([0-9A-F]{24})\.compress\.([0-9a-f]{8})\] received", logs
    ):
        chains.setdefault(wal, set()).add(chain_id)
    return chains


# commit-removal: the group commit's catalog transaction and xlogdb append are done,
# the sources not yet removed (the scan settles them: checksummed and dropped).
@pytest.mark.parametrize("stage", ["compress", "encrypt", "store", "commit", "commit-removal"])
def test_kill_9_in_each_stage_loses_nothing(
    stage: str, fleet_home, wal_corpus, fleet_factory, workdir: Path, gpg_key
) -> None:
    # The encrypt hop runs only for a server that encrypts. A short claim_timeout there makes
    # a redelivered hop that cannot finish the chain show as a second chain (the scans'
    # re-drive) rather than as a wait: every stage must recover by redelivery alone.
    if stage == "encrypt":
        home = fleet_home({"pg1": gpg_settings(gpg_key)}, claim_timeout=6.0)
    else:
        home = fleet_home()
    faults = workdir / "faults"
    faults.mkdir()
    (faults / stage).touch()
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:8])
    fleet = fleet_factory(home.config_path, WALQ_FAULT_DIR=str(faults), GNUPGHOME=str(gpg_key.home))
    fleet.worker("w1")
    fleet.worker("w2")
    fleet.beat()
    pid = _frozen_at(faults, stage, fleet)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_state(pid) in (None, "Z"), 30, f"pid {pid} to die")
    _wait_archived_once(home, fleet, names)
    logs = fleet.logs(tail=0)
    assert "WorkerLostError" in logs or "exited prematurely" in logs, "the kill went unnoticed"
    # The killed run's own message came back, re-queued from the worker's memory (no
    # copy waits in Redis: ack emulation is off), not only the claim's re-drive.
    task = STAGE_TASKS[stage]
    assert _requeued(logs, task), f"no {task} message was re-queued after the kill"
    redriven = {wal: ids for wal, ids in _chains_per_wal(logs).items() if len(ids) > 1}
    assert not redriven, f"the redelivered {task} did not finish its chain: {redriven}"
    if stage == "commit-removal":
        assert xlogdb_names(home.wals()) == names, "group commits append in WAL order"


def test_kill_9_of_a_whole_worker_is_recovered_by_the_scans(
    fleet_home, wal_corpus, fleet_factory, workdir: Path
) -> None:
    """The worker's main process dies too, and with it the messages it held (no copy in
    Redis: kombu's ack emulation is off). The catalog brings the WAL back: its claim's
    deadline passes and the next scan enqueues a new chain for it."""
    home = fleet_home(claim_timeout=6.0)
    faults = workdir / "faults"
    faults.mkdir()
    (faults / "store").touch()
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:8])
    fleet = fleet_factory(home.config_path, WALQ_FAULT_DIR=str(faults))
    w1 = fleet.worker("w1")
    w2 = fleet.worker("w2")
    fleet.beat()
    pid = _frozen_at(faults, "store", fleet)
    victim = next(w for w in (w1, w2) if os.getpgid(pid) == w.pid)
    os.killpg(victim.pid, signal.SIGKILL)  # main process and pool child, by process group id
    victim.popen.wait(timeout=30)
    _wait_archived_once(home, fleet, names)
    logs = fleet.logs(tail=0)
    killed = _unfinished(logs, "walq.store")
    assert killed, "no store run was cut short by the kill"
    chains = _chains_per_wal(logs)
    for task_id in killed:  # pg1.<WAL>.store.<chain>: the WAL came back as a new chain
        assert len(chains[task_id.split(".")[1]]) > 1, f"{task_id}: not re-driven by a scan"


def test_frozen_lock_holder_is_fenced_and_writes_nothing_twice(
    fleet_home, wal_corpus, fleet_factory, workdir: Path
) -> None:
    home = fleet_home(lock_ttl=2.0, claim_timeout=120.0)
    faults = workdir / "faults"
    faults.mkdir()
    (faults / "commit").touch()
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:8])
    fleet = fleet_factory(home.config_path, WALQ_FAULT_DIR=str(faults))
    fleet.worker("w1")
    fleet.worker("w2")
    fleet.beat()
    pid = _frozen_at(faults, "commit", fleet)  # inside commit, holding the lock, token taken
    catalog = open_catalog(home.config)
    locks = fleet_redis(home)
    try:
        frozen_holder = locks.get(keys.lock("pg1", "commit"))
        assert frozen_holder and f":{pid}:" in frozen_holder.decode(), (
            "the frozen worker holds the lock"
        )
        before = set(catalog.archived_names("pg1"))
        # The lock expires (no extension from a stopped process) and another worker commits.
        wait_for(
            lambda: set(catalog.archived_names("pg1")) - before, 90, "another worker to commit", 0.1
        )
        assert locks.get(keys.lock("pg1", "commit")) != frozen_holder
        os.kill(pid, signal.SIGCONT)
        _wait_archived(catalog, fleet, names)
        assert_archived_once(home, catalog, names)
    finally:
        catalog.close()
        os.kill(pid, signal.SIGCONT) if process_state(pid) == "T" else None
    # the resumed holder's commit is refused (with a group commit, another worker may
    # have committed its whole batch first, so the refusal can come after the last WAL)
    try:
        wait_for(
            lambda: re.search(r"refused: fencing token \d+ is older than \d+", fleet.logs(tail=0)),
            60,
            "the resumed holder's commit to be refused",
            0.2,
        )
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None


def test_redis_restart_mid_run_recovers_on_next_scans(
    fleet_home, wal_corpus, fleet_factory, redis_server
) -> None:
    home = fleet_home(claim_timeout=6.0)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:30])
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.worker("w2")
    fleet.beat()
    catalog = open_catalog(home.config)
    try:
        wait_for(
            lambda: len(catalog.archived_names("pg1")) >= 2, 90, "the run to be under way", 0.05
        )
        before = redis_server.proc.pid
        redis_server.restart()  # no persistence: queued and unacked messages, locks, fences are gone
        assert redis_server.proc.pid != before
        _wait_archived(catalog, fleet, names, timeout=240)
        assert_archived_once(home, catalog, names)
    finally:
        catalog.close()


def test_two_beats_enqueue_each_wal_once(fleet_home, wal_corpus, fleet_factory) -> None:
    home = fleet_home()
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.worker("w2")
    b1 = fleet.beat("beat1")
    b2 = fleet.beat("beat2")
    for beat in (b1, b2):  # both are ticking before any WAL arrives
        wait_for(
            lambda b=beat: "Sending due task scan group default" in b.output(),
            60,
            f"{beat.name} to send a scan",
        )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:20])
    _wait_archived_once(home, fleet, names)
    chains: dict[str, set[str]] = {}
    for match in re.finditer(
        r"walq\.compress\[pg1\.([0-9A-F]{24})\.compress\.([0-9a-f]{8})\] received",
        fleet.logs(tail=0),
    ):
        chains.setdefault(match.group(1), set()).add(match.group(2))
    assert sorted(chains) == names
    assert all(len(ids) == 1 for ids in chains.values()), {
        k: v for k, v in chains.items() if len(v) > 1
    }


def fleet_redis(home):
    import redis

    return redis.Redis.from_url(home.config.effective_lock_url)
