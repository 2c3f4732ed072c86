"""Operating the fleet from Flower: a WAL that failed because its storage was
unwritable is retried, once the cause is fixed, through Flower's HTTP API
(``/api/task/async-apply/walq.retry_wal``) with basic auth; without auth the
same call is refused. Flower's task list names each WAL's stages and failures."""

from __future__ import annotations

from pathlib import Path

from tests.services.fleet import http, wait_flower
from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import free_port, wait_for
from walq.catalog import WalState, open_catalog

AUTH = "operator:s3cret-pass"


def _home_with_blocked_storage(
    fleet_home, workdir: Path, **overrides: object
) -> tuple[Path, WalqHome]:
    """A fleet home whose file storage lies under a regular file: every store fails until the
    test (the operator) removes that file."""
    blocked = workdir / "archive-volume"
    blocked.write_text("not a directory: the storage cannot be created under it\n")
    return blocked, fleet_home({"pg1": {"storage_url": f"file://{blocked}/wals"}}, **overrides)


def test_failed_wal_retried_through_flower_api_with_auth(
    fleet_home, workdir: Path, wal_corpus, fleet_factory
) -> None:
    # task_events: the workers send events from their first task (Flower alone turns them
    # on only at its next broadcast, and this WAL fails within seconds)
    blocked, home = _home_with_blocked_storage(
        fleet_home, workdir, task_max_retries=1, task_events=True
    )
    wal = wal_corpus.segments[0]
    wal_corpus.copy_into(home.incoming(), [wal])
    fleet = fleet_factory(home.config_path)
    port = free_port()
    flower = fleet.flower(port, AUTH)
    fleet.worker("w1")
    fleet.beat()
    base = wait_flower(flower, port)

    catalog = open_catalog(home.config)
    try:
        try:
            record = wait_for(
                lambda: (r := catalog.get("pg1", wal)) and r.state is WalState.FAILED and r,
                120,
                "the WAL to be marked failed",
                0.2,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
        assert "gave up after 2 attempts" in record.last_error and "cannot" in record.last_error
        assert (home.incoming() / wal).exists(), "a failed WAL stays in place"

        # Flower's task list shows the WAL's stages by name, and the failure.
        def failed_store_listed() -> bool:
            status, tasks = http("GET", f"{base}/api/tasks?limit=200", auth=AUTH)
            if status != 200:
                return False
            seen = {(t["name"], t["state"]) for t in tasks.values() if wal in (t.get("args") or "")}
            return ("walq.store", "FAILURE") in seen and ("walq.compress", "SUCCESS") in seen

        wait_for(failed_store_listed, 60, "Flower to list the failed store of the WAL", 0.5)

        blocked.unlink()  # the operator fixes the cause
        url = f"{base}/api/task/async-apply/walq.retry_wal"
        status, body = http("POST", url, {"args": ["pg1", wal]})
        assert status == 401, (status, body)
        status, body = http("POST", url, {"args": ["pg1", wal]}, auth="operator:wrong")
        assert status == 401, (status, body)
        assert catalog.get("pg1", wal).state is WalState.FAILED, "a refused call changes nothing"

        status, body = http("POST", url, {"args": ["pg1", wal]}, auth=AUTH)
        assert status == 200 and body.get("task-id"), (status, body)
        try:
            wait_for(
                lambda: catalog.get("pg1", wal).state is WalState.ARCHIVED,
                120,
                "the retried WAL",
                0.2,
            )
        except TimeoutError:
            raise AssertionError(fleet.logs()) from None
        assert xlogdb_names(blocked / "wals") == [wal]
        assert not (home.incoming() / wal).exists()
    finally:
        catalog.close()
    assert AUTH.split(":")[1] not in fleet.logs(tail=0), "the Flower password leaked into a log"


def test_flower_refuses_to_start_without_auth(fleet_home, fleet_factory) -> None:
    home = fleet_home()
    fleet = fleet_factory(home.config_path)
    proc = fleet._spawn(
        "flower-open",
        ["flower", f"--port={free_port()}", "--address=127.0.0.1"],
        {"FLOWER_BASIC_AUTH": ""},
    )
    proc.popen.wait(timeout=60)
    assert proc.popen.returncode != 0
    assert "refusing to start Flower without authentication" in proc.output()


def test_cli_retry_in_fleet_mode_redrives_through_the_next_scan(
    fleet_home, workdir: Path, wal_corpus, fleet_factory
) -> None:
    blocked, home = _home_with_blocked_storage(fleet_home, workdir, task_max_retries=0)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")
    fleet.beat()
    catalog = open_catalog(home.config)
    try:
        wait_for(
            lambda: [r.name for r in catalog.records("pg1", WalState.FAILED)] == names,
            120,
            "both WALs to fail",
            0.2,
        )
        blocked.unlink()
        res = home.run("retry", "pg1", "--all-failed", check=True)
        assert "2 WAL(s) re-driven" in res.stdout and "next scan" in res.stdout
        wait_for(lambda: catalog.archived_names("pg1") == names, 120, "the re-driven WALs", 0.2)
    finally:
        catalog.close()
