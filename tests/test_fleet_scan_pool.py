"""Scans never wait behind compression (issue 15, many servers): in the Procfile's layout
the scans run on the ``io`` worker's threads, so a ``cpu`` pool busy with a WAL still
leaves every scan served.

The Procfile's own ``cpu`` and ``io`` lines give the queues and pools; the ``cpu``
pool (one process) is held by a compress frozen with a real SIGSTOP (walq.fleet's
fault point). A scan sent meanwhile must claim the next WAL. With scans beside
compression (``cpu: -Q walq.scan,walq.cpu``) that scan waited in the queue until the
compress finished.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tests.services.fleet import REPO, celery_client, pending, process_state, read_pid
from tests.services.pg import wait_for
from walq.catalog import WalState, open_catalog


def procfile_worker(name: str) -> tuple[str, str]:
    """The ``-Q`` queues and ``--pool`` of the Procfile's worker line ``name``."""
    line = next(
        line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith(f"{name}:")
    )
    found = re.search(r"-Q (\S+) --pool (\S+)", line)
    assert found, line
    return found[1], found[2]


def test_a_scan_is_served_while_the_cpu_pool_is_busy(
    fleet_home, wal_corpus, fleet_factory, workdir: Path
) -> None:
    home = fleet_home()
    faults = workdir / "faults"
    faults.mkdir()
    (faults / "compress").touch()
    fleet = fleet_factory(home.config_path, WALQ_FAULT_DIR=str(faults))
    cpu_queues, cpu_pool = procfile_worker("cpu")
    io_queues, io_pool = procfile_worker("io")
    fleet.worker("cpu", pool=cpu_pool, concurrency=1, queues=cpu_queues)
    fleet.worker("io", pool=io_pool, concurrency=2, queues=io_queues)
    client = celery_client(home.config_path)
    catalog = open_catalog(home.config)
    try:
        first, second = wal_corpus.segments[:2]
        wal_corpus.copy_into(home.incoming(), [first])
        client.send_task("walq.scan_server", args=["pg1"], ignore_result=True)
        try:  # the cpu pool's only process stops inside the first WAL's compress
            pid = wait_for(
                lambda: read_pid(faults / "compress.pid"), 90, "a compress to freeze", 0.1
            )
            wait_for(lambda: process_state(pid) == "T", 30, f"pid {pid} to stop", 0.05)
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None

        wal_corpus.copy_into(home.incoming(), [second])
        client.send_task("walq.scan_server", args=["pg1"], ignore_result=True)
        claimed = lambda: {r.name for r in catalog.records("pg1", WalState.CLAIMED)}  # noqa: E731
        try:
            wait_for(lambda: second in claimed(), 60, f"a scan to claim {second}", 0.2)
        except TimeoutError:
            raise AssertionError(f"the scan waited behind compression\n{fleet.logs()}") from None
        assert process_state(pid) == "T", "the cpu pool was still busy when the scan ran"

        os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: (
                catalog.archived_names("pg1") == [first, second] and not pending(home.incoming())
            ),
            120,
            "both WAL archived",
            0.25,
        )
    finally:
        catalog.close()


def _received(logs: str, task: str, server: str | None = None) -> int:
    """How many ``task`` messages the workers received (for ``server``: its task ids)."""
    prefix = re.escape(f"{server}.") if server else ""
    return len(re.findall(rf"Task {re.escape(task)}\[{prefix}[^\]]*\] received", logs))


def test_beat_ticks_once_per_group_and_scans_only_servers_with_work(
    fleet_home, wal_corpus, fleet_factory
) -> None:
    """An idle server costs no message per tick: beat sends one walq.scan_group per
    worker group, and only a server with WAL waiting gets a walq.scan_server."""
    home = fleet_home({"pg1": {}, "pg2": {}, "pg3": {}})
    fleet = fleet_factory(home.config_path)
    cpu_queues, cpu_pool = procfile_worker("cpu")
    io_queues, io_pool = procfile_worker("io")
    fleet.worker("cpu", pool=cpu_pool, concurrency=1, queues=cpu_queues)
    io = fleet.worker("io", pool=io_pool, concurrency=2, queues=io_queues)
    beat = fleet.beat()
    ticks = lambda: _received(io.output(), "walq.scan_group")  # noqa: E731
    wait_for(lambda: ticks() >= 3, 60, "three scan ticks", 0.2)

    names = wal_corpus.copy_into(home.incoming("pg2"), wal_corpus.segments[:6])
    catalog = open_catalog(home.config)
    try:
        wait_for(
            lambda: catalog.archived_names("pg2") == names and not pending(home.incoming("pg2")),
            120,
            "pg2's WAL archived",
            0.25,
        )
    finally:
        catalog.close()
    seen = ticks()
    wait_for(lambda: ticks() >= seen + 5, 60, "five more scan ticks", 0.2)

    logs = io.output()
    assert "Sending due task scan group default" in beat.output()
    assert _received(logs, "walq.scan_server", "pg2") >= 1, logs[-3000:]
    # pg1 and pg3: at most their first sight (directories and spool made) in all these ticks
    for idle in ("pg1", "pg3"):
        assert _received(logs, "walq.scan_server", idle) <= 2, logs[-3000:]
    assert ticks() >= 8


def test_a_server_whose_look_fails_does_not_hold_up_its_group(
    fleet_home, wal_corpus, fleet_factory
) -> None:
    """pg1's spool path is a file, so the tick's look at it fails (and so does its scan,
    which retries on its own); pg2 in the same group is still scanned and archived. A tick
    for a group no server names is refused in one line."""
    home = fleet_home({"pg1": {}, "pg2": {}})
    blocked = home.config.spool_dir / "pg1"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory\n")
    names = wal_corpus.copy_into(home.incoming("pg2"), wal_corpus.segments[:4])
    fleet = fleet_factory(home.config_path)
    cpu_queues, cpu_pool = procfile_worker("cpu")
    io_queues, io_pool = procfile_worker("io")
    fleet.worker("cpu", pool=cpu_pool, concurrency=1, queues=cpu_queues)
    io = fleet.worker("io", pool=io_pool, concurrency=2, queues=io_queues)
    fleet.beat()
    catalog = open_catalog(home.config)
    try:
        try:
            wait_for(
                lambda: (
                    catalog.archived_names("pg2") == names and not pending(home.incoming("pg2"))
                ),
                120,
                "pg2's WAL archived",
                0.25,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
    finally:
        catalog.close()
    wait_for(lambda: "scan tick: pg1:" in io.output(), 30, "the tick to name pg1's failure")

    client = celery_client(home.config_path)
    client.send_task("walq.scan_group", args=["nowhere"], ignore_result=True)
    wait_for(
        lambda: "refused: group: no configured server names 'nowhere'" in io.output(),
        60,
        "the made-up group to be refused",
        0.2,
    )
