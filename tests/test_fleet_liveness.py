"""walq check catches a dead fleet: no live worker on a queue, or beat not ticking.

A real cluster hands WAL to ``walq put-wal``; real Celery workers and beat archive it.
Workers are killed (-9: no clean goodbye, the heartbeat just goes stale) while
PostgreSQL keeps producing WAL, and check turns FAILED in the default, --nagios and
--json outputs; a worker that consumes only some queues is not enough; beat stopped
fails the ``beat`` line. ``fleet_liveness_maximum`` is a few seconds and every wait
is on a condition with a deadline.
"""

from __future__ import annotations

import json
import signal

from tests.services.homes import walq_command
from tests.services.pg import wait_for
from tests.test_check_progress import as_json, check_until_failed, failed, json_failed, lines
from tests.test_check_progress import nagios as nagios_check
from walq import keys
from walq.config import load_config
from walq.fleet.liveness import read_liveness

BOUND = 3  # seconds (fleet_liveness_maximum)


def produce_wal(pg) -> str:
    pg.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
    return pg.switch_wal()


def check_until_ok(home) -> None:
    seen = {}

    def ok() -> bool:
        seen["res"] = home.run("check", "pg1", timeout=120)
        return seen["res"].returncode == 0

    try:
        wait_for(ok, 90, "check to pass", interval=0.3)
    except TimeoutError:
        raise AssertionError(seen["res"].stdout + seen["res"].stderr) from None


def test_check_fails_when_workers_or_beat_stop(
    fleet_home, cluster_factory, fleet_factory, redis_server, walq_runnable_by_postgres
) -> None:
    pg = cluster_factory("pg")
    home = fleet_home({"pg1": {"conninfo": pg.conninfo}}, fleet_liveness_maximum=f"{BOUND} seconds")
    assert home.run("catalog", "init").returncode == 0
    home.give_to_postgres()
    pg.configure(
        {"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"}
    )
    pg.start()
    fleet = fleet_factory(home.config_path)
    worker = fleet.worker("w1")
    beat = fleet.beat()

    # The fleet archives: check is OK in every output, with the two fleet lines.
    wal = produce_wal(pg)
    pg.wait_archived(wal)
    check_until_ok(home)
    res = home.run("check", "pg1", timeout=120)
    found = lines(res)
    assert found["fleet workers"][0] == "OK" and "w1@" in found["fleet workers"][1]
    assert found["beat"][0] == "OK", found["beat"]
    code, m, perf = nagios_check(home)
    assert code == 0 and m["state"] == "OK", m.group(0)
    assert perf["pg1_live_workers"][0] == 1 and perf["pg1_beat_age_seconds"][1] == str(BOUND)
    code, doc = as_json(home)
    assert code == 0 and {"fleet workers", "beat"} <= {c["check"] for c in doc["checks"]}

    # The heartbeat names the worker's queues, on Redis's clock.
    client = redis_server.client(1)  # lock_url's database: walq's own keys
    live = read_liveness(client, BOUND)
    assert [w.queues for w in live.live_workers()] == [tuple(sorted(keys.QUEUES))]

    # Workers die (-9) while PostgreSQL keeps producing WAL.
    fleet.stop(worker, signal.SIGKILL)
    last = ""
    for _ in range(2):
        last = produce_wal(pg)
    pg.wait_archived(last)  # archive_command (put-wal) still succeeds: PostgreSQL looks healthy
    assert (home.incoming() / last).exists()
    res = check_until_failed(home, "fleet workers")
    assert res.returncode == 1 and failed(res) == {"fleet workers"}, res.stdout
    detail = lines(res)["fleet workers"][1]
    assert "no live worker consumes walq.scan, walq.cpu, walq.io" in detail, detail
    assert f"maximum {BOUND}s" in detail and "is the fleet running?" in detail
    code, m, perf = nagios_check(home)
    assert code == 2 and m["state"] == "CRITICAL", m.group(0)
    assert m["text"].startswith("pg1: fleet workers (no live worker consumes"), m.group(0)
    assert perf["pg1_live_workers"][0] == 0
    code, doc = as_json(home)
    assert code == 1 and doc["status"] == "failed" and json_failed(doc) == {"fleet workers"}

    # A worker on some of the queues only is not a fleet: the chains also need walq.io.
    partial = fleet.worker("cpu", queues="walq.scan,walq.cpu")
    res = home.run("check", "pg1", timeout=120)
    assert failed(res) == {"fleet workers"}, res.stdout
    assert "no live worker consumes walq.io (" in lines(res)["fleet workers"][1]

    # An io worker joins: everything waiting is archived and check passes again.
    fleet.worker("io", pool="threads", queues="walq.io")
    wait_for(lambda: not (home.incoming() / last).exists(), 120, f"{last} archived", 0.3)
    check_until_ok(home)

    # A clean stop removes the worker at once (its field is gone, not just stale).
    fleet.stop(partial)
    nodes = {w.node for w in read_liveness(client, BOUND).workers}
    assert not any(n.startswith("cpu@") for n in nodes), nodes
    res = home.run("check", "pg1", timeout=120)
    assert "no live worker consumes walq.scan, walq.cpu (" in lines(res)["fleet workers"][1]
    fleet.worker("cpu2", queues="walq.scan,walq.cpu")
    check_until_ok(home)

    # Beat stops: no tick within the bound fails the beat line, in every output.
    fleet.stop(beat)
    res = check_until_failed(home, "beat")
    assert failed(res) == {"beat"}, res.stdout
    assert "is the fleet running?" in lines(res)["beat"][1]
    code, m, _ = nagios_check(home)
    assert code == 2 and m["text"].startswith("pg1: beat (last tick "), m.group(0)
    code, doc = as_json(home)
    assert code == 1 and json_failed(doc) == {"beat"}


def test_unreachable_redis_fails_both_lines_in_one_masked_line(make_home) -> None:
    home = make_home(
        {"pg1": {}},
        broker_url="redis://:s3cret@127.0.0.1:1/0",
        catalog_url=None,
    )
    res = home.run("check", "--json", timeout=120)
    doc = json.loads(res.stdout)
    fleet_lines = [c for c in doc["checks"] if c["check"] in ("fleet workers", "beat")]
    assert [c["status"] for c in fleet_lines] == ["failed", "failed"], doc
    assert all("cannot read Redis (lock_url)" in c["detail"] for c in fleet_lines)
    assert "s3cret" not in res.stdout + res.stderr


def test_bound_is_configurable_and_checked(make_home) -> None:
    home = make_home({"pg1": {}}, scan_interval=20, broker_url="redis://127.0.0.1:1/0")
    assert home.config.liveness_maximum == 60  # 3 scan intervals, at least 30 s
    assert load_config(home.config_path).heartbeat_interval == 10
    bad = make_home({"pg1": {}}, fleet_liveness_maximum="soon")
    res = bad.run("check")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "fleet_liveness_maximum" in res.stderr
