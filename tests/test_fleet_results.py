"""No result key outlives its WAL: walq's tasks ignore their results, and the RETRY mark a
retried run stores (``task_store_errors_even_if_ignored``) is dropped once it settles.

A real fleet, its own redis-server; the server's commit lock is held from the test past
the group commit's wait (COMMIT_LOCK_WAIT), so ``walq.commit_server`` really retries."""

from __future__ import annotations

import re

import redis

from tests.services.control_plane import result_keys, tasks_finished, tasks_received
from tests.services.fleet import assert_archived_once, wait_settled
from tests.services.pg import wait_for
from walq.catalog import open_catalog
from walq.locks import open_lock


def test_a_commit_retried_behind_a_held_lock_leaves_no_result_key(
    fleet_home, wal_corpus, fleet_factory
) -> None:
    home = fleet_home()
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    broker = redis.Redis.from_url(home.config.broker_url)
    lock = open_lock(home.config, "pg1", "commit")
    lock.acquire()  # kept alive by its own thread until released
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.beat()
    retried = re.compile(r"Task walq\.commit_server\[[^\]]+\] retry")
    try:
        wait_for(lambda: retried.search(fleet.logs(tail=0)), 120, "a group commit to retry")
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None
    finally:
        lock.release()
    catalog = open_catalog(home.config)
    try:
        wait_settled(home, catalog, fleet)
        assert_archived_once(home, catalog, names)
    finally:
        catalog.close()

    def commits_done() -> bool:  # a retry's next run is received at once, run at its ETA
        logs = fleet.logs(tail=0)
        return (
            tasks_received(logs)["walq.commit_server"] == tasks_finished(logs)["walq.commit_server"]
        )

    wait_for(commits_done, 60, "every group commit to finish")
    left = {k: broker.get(k) for k in broker.scan_iter(match="celery-task-meta-*")}
    ids = [k.decode().removeprefix("celery-task-meta-") for k in left]
    trail = [ln for ln in fleet.logs(tail=0).splitlines() if any(i in ln for i in ids)]
    assert result_keys(broker) == 0, (left, trail)
