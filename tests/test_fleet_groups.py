"""Per-host routing: each server's tasks go to its worker group's queues.

Two "hosts" on one machine: two workers, each in its own mount namespace where
the other group's server directory is hidden under an empty tmpfs. Each group
archives its own server's WAL and never receives a task of the other's.
"""

from __future__ import annotations

import re

from tests.services.fleet import assert_archived_once, pending
from tests.services.hosts import worker_on_host
from tests.services.pg import wait_for
from walq.catalog import open_catalog

TASK_SERVER = re.compile(r"Task walq\.\w+\[(\w+)\.")


def _queues(group: str) -> str:
    return ",".join(f"walq.{kind}.{group}" for kind in ("scan", "cpu", "io"))


def test_two_worker_groups_each_archive_only_their_own_servers(
    fleet_home, wal_corpus, fleet_factory
) -> None:
    home = fleet_home({"pg1": {"worker_group": "hosta"}, "pg2": {"worker_group": "hostb"}})
    for server in ("pg1", "pg2"):
        home.incoming(server).mkdir(parents=True, exist_ok=True)
        home.wals(server).mkdir(parents=True, exist_ok=True)
    first = wal_corpus.copy_into(home.incoming("pg1"), wal_corpus.segments[:6])
    second = wal_corpus.copy_into(home.incoming("pg2"), wal_corpus.segments[6:12])
    fleet = fleet_factory(home.config_path)
    host_a = worker_on_host(fleet, "hosta", _queues("hosta"), [home.server_dir("pg2")])
    host_b = worker_on_host(fleet, "hostb", _queues("hostb"), [home.server_dir("pg1")])
    fleet.beat()
    catalog = open_catalog(home.config)
    try:
        try:
            wait_for(
                lambda: (
                    catalog.archived_names("pg1") == first
                    and catalog.archived_names("pg2") == second
                    and not pending(home.incoming("pg1"))
                    and not pending(home.incoming("pg2"))
                ),
                180,
                "both groups to archive their servers",
                0.25,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
        assert_archived_once(home, catalog, first, "pg1")
        assert_archived_once(home, catalog, second, "pg2")
    finally:
        catalog.close()
    seen_a = set(TASK_SERVER.findall(host_a.output()))
    seen_b = set(TASK_SERVER.findall(host_b.output()))
    assert seen_a == {"pg1"}, seen_a
    assert seen_b == {"pg2"}, seen_b
