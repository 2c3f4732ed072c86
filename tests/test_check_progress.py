"""walq check catches a dead archiver: WAL piling up, nothing archived lately, never archived.

The end-to-end test runs a real cluster whose archive_command is ``walq put-wal``,
archives once with ``walq archive``, then lets "the archiver die" (no more
``walq archive``) while PostgreSQL keeps switching WAL: check turns FAILED in the
default, --nagios and --json outputs. Bounds are tiny ("1 second") and every wait
is on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.services.config_file import write_walq_config
from tests.services.homes import WalqHome, walq_command
from tests.services.pg import Cluster, chown_postgres, wait_for
from walq.config import default_archive_lag_maximum, parse_duration

LINE = re.compile(
    r"^(?P<server>[^:]+): (?P<name>.+?): (?P<status>OK|FAILED|SKIPPED)(?: \((?P<detail>.*)\))?$"
)
NAGIOS = re.compile(
    r"^WALQ (?P<state>OK|CRITICAL|UNKNOWN) - (?P<text>[^|]*?)(?: \| (?P<perf>.*))?$"
)
PERF = re.compile(r"^(?P<label>[\w.-]+)=(?P<value>\d+);;(?P<crit>\d*);0$")
PROGRESS_CHECKS = ("WAL archive", "WAL maximum age", "archiver progress")


def lines(res: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """pg1's check lines by name: (status, detail); every line must parse."""
    found: dict[str, tuple[str, str]] = {}
    for text in res.stdout.splitlines():
        m = LINE.match(text)
        assert m, f"not a check line: {text!r}"
        found[m["name"]] = (m["status"], m["detail"] or "")
    return found


def failed(res: subprocess.CompletedProcess) -> set[str]:
    return {name for name, (status, _) in lines(res).items() if status == "FAILED"}


def check_until_failed(home: WalqHome, name: str) -> subprocess.CompletedProcess:
    """Run ``walq check pg1`` until ``name`` is FAILED: a deadline, never a fixed sleep."""
    seen: dict[str, subprocess.CompletedProcess] = {}

    def failing() -> bool:
        seen["res"] = home.run("check", "pg1", timeout=120)
        return name in failed(seen["res"])

    wait_for(failing, 60, f"{name} to fail", interval=0.2)
    return seen["res"]


def nagios(home: WalqHome) -> tuple[int, re.Match[str], dict[str, tuple[int, str]]]:
    """``walq check --nagios``: exit code, the parsed line, perfdata label -> (value, crit)."""
    res = home.run("check", "--nagios", timeout=120)
    out = res.stdout.splitlines()
    assert len(out) == 1, res.stdout + res.stderr
    m = NAGIOS.match(out[0])
    assert m, out[0]
    perf: dict[str, tuple[int, str]] = {}
    for item in (m["perf"] or "").split():
        pm = PERF.match(item)
        assert pm, item
        perf[pm["label"]] = (int(pm["value"]), pm["crit"])
    return res.returncode, m, perf


def as_json(home: WalqHome) -> tuple[int, dict]:
    res = home.run("check", "--json", timeout=120)
    return res.returncode, json.loads(res.stdout)


def json_failed(doc: dict) -> set[str]:
    return {c["check"] for c in doc["checks"] if c["status"] == "failed"}


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1 hour", 3600),
        ("3 HOURS", 10800),
        ("30 minutes", 1800),
        ("1 second", 1),
        ("2 days", 172800),
        ("1 week", 604800),
        ("1 month", 31 * 86400),  # Barman's month
        (" 12 hours ", 43200),
        (90, 90),
        ("90", 90),  # a WALQ_* variable is a string
    ],
)
def test_durations_are_barmans_forms_plus_minutes_and_seconds(text, seconds) -> None:
    assert parse_duration(text) == seconds


def test_bounds_are_per_server_with_a_top_level_default(make_home) -> None:
    home = make_home(
        {
            "pg1": {},
            "pg2": {
                "last_wal_maximum_age": "2 days",
                "max_incoming_wals_queue": 7,
                "archive_lag_maximum": "1 minute",
            },
        },
        last_wal_maximum_age="1 hour",
        max_incoming_wals_queue=100,
        scan_interval=200,
    )
    servers = home.config.servers
    assert servers["pg1"].last_wal_maximum_age == 3600
    assert servers["pg1"].max_incoming_wals_queue == 100
    assert servers["pg1"].archive_lag_maximum == 600  # 3 scan intervals
    assert servers["pg2"].last_wal_maximum_age == 172800
    assert servers["pg2"].max_incoming_wals_queue == 7
    assert servers["pg2"].archive_lag_maximum == 60


def test_default_archive_lag_maximum() -> None:
    assert default_archive_lag_maximum(10) == 300  # never under five minutes
    assert default_archive_lag_maximum(600) == 1800


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("server", "last_wal_maximum_age", "1 hr", "must be a duration such as"),
        ("server", "archive_lag_maximum", "0 seconds", "must be greater than zero"),
        ("server", "max_incoming_wals_queue", -1, "greater than or equal to 0"),
        ("top", "last_wal_maximum_age", "soon", "must be a duration such as"),
        ("top", "max_incoming_wals_queue", "lots", "valid integer"),
        ("top", "archive_lag_maximum", True, "must be a duration such as"),
    ],
)
def test_bad_bounds_are_one_line_naming_the_key(make_home, where, key, value, message) -> None:
    if where == "server":
        home = make_home({"pg1": {key: value}})
        named = f"servers.pg1.{key}"
    else:
        home = make_home({"pg1": {}}, **{key: value})
        named = key
    res = home.run("check")
    assert res.returncode == 2 and res.stdout == "", res
    err = res.stderr.splitlines()
    assert len(err) == 1 and f"{named}: " in err[0] and message in err[0], err
    # As a Nagios plugin: the one line on stdout, CRITICAL (the same exit code 2).
    res = home.run("check", "--nagios")
    assert res.returncode == 2, res
    assert res.stdout.startswith("WALQ CRITICAL - ") and f"{named}: " in res.stdout, res
    assert len(res.stdout.splitlines()) == 1


# -- the checks on real WAL, without PostgreSQL ------------------------------------------


def test_a_new_server_says_no_wal_yet(walq_home: WalqHome) -> None:
    res = walq_home.run("check", "pg1")
    assert res.returncode == 0, res
    found = lines(res)
    assert found["WAL archive"] == ("OK", "no WAL yet: a new server, nothing archived or waiting")
    assert found["WAL maximum age"] == ("SKIPPED", "no last_wal_maximum_age")
    assert found["archiver progress"] == ("OK", "nothing waiting")
    assert "incoming WALs queue" not in found  # not configured: not checked
    code, m, perf = nagios(walq_home)
    assert code == 0 and m["state"] == "OK", m.group(0)
    assert re.fullmatch(r"1 server, \d+ checks, \d+ skipped", m["text"]), m.group(0)
    assert perf["pg1_queue"] == (0, "") and perf["pg1_oldest_waiting_seconds"] == (0, "300")
    assert "pg1_last_archived_age_seconds" not in perf


def test_never_archived_fails_and_a_dead_archiver_is_caught(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"archive_lag_maximum": "1 second"}})
    for name in wal_corpus.segments[:3]:
        res = home.run("put-wal", "pg1", str(wal_corpus.path(name)))
        assert res.returncode == 0, res
    res = check_until_failed(home, "archiver progress")
    assert res.returncode == 1
    assert failed(res) == {"WAL archive", "archiver progress"}, res.stdout
    found = lines(res)
    assert found["WAL archive"][1].startswith("nothing archived yet, 3 file(s) waiting")
    assert "maximum 1s, 3 file(s) waiting" in found["archiver progress"][1]

    # The archiver runs: everything passes again.
    home.run("archive", "pg1", check=True)
    res = home.run("check", "pg1")
    assert res.returncode == 0, res.stdout
    found = lines(res)
    assert found["WAL archive"][0] == "OK" and wal_corpus.segments[2] in found["WAL archive"][1]
    assert found["archiver progress"] == ("OK", "nothing waiting")


def test_queue_longer_than_max_incoming_wals_queue_fails(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {"max_incoming_wals_queue": 2}})
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    found = lines(home.run("check", "pg1"))
    assert found["incoming WALs queue"] == ("OK", "2 waiting, maximum 2")
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[2:3])
    res = home.run("check", "pg1")
    assert res.returncode == 1
    assert lines(res)["incoming WALs queue"] == ("FAILED", "3 waiting, maximum 2")
    code, m, perf = nagios(home)
    assert code == 2 and m["state"] == "CRITICAL"
    assert "pg1: incoming WALs queue (3 waiting, maximum 2)" in m["text"]
    assert perf["pg1_queue"] == (3, "2")
    home.run("archive", "pg1", check=True)
    res = home.run("check", "pg1")
    assert res.returncode == 0 and lines(res)["incoming WALs queue"][0] == "OK", res.stdout


def test_newest_wal_older_than_last_wal_maximum_age_fails(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {}}, last_wal_maximum_age="1 second")  # the top-level default
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    home.run("archive", "pg1", check=True)
    res = check_until_failed(home, "WAL maximum age")
    assert failed(res) == {"WAL maximum age"} and res.returncode == 1, res.stdout
    assert "maximum 1s" in lines(res)["WAL maximum age"][1]
    code, m, perf = nagios(home)
    assert code == 2 and "pg1: WAL maximum age (newest archived" in m["text"], m.group(0)
    age, crit = perf["pg1_last_archived_age_seconds"]
    assert crit == "1" and age >= 1
    code, doc = as_json(home)
    assert code == 1 and doc["status"] == "failed" and json_failed(doc) == {"WAL maximum age"}


def test_only_failed_rows_is_never_archived(make_home, wal_corpus) -> None:
    """Something was queued and failed, nothing was archived: Barman's hint."""
    home = make_home({"pg1": {}})
    junk = home.incoming() / wal_corpus.segments[0]
    home.incoming().mkdir(parents=True)
    junk.write_bytes(b"\0" * (1 << 20))  # a WAL name, not WAL: parked, a failed row
    assert home.run("archive", "pg1").returncode == 1
    found = lines(home.run("check", "pg1"))
    status, detail = found["WAL archive"]
    assert status == "FAILED" and "please make sure WAL shipping is setup" in detail, detail


def test_no_servers_in_each_output(workdir) -> None:
    (workdir / "home").mkdir()
    home = WalqHome(workdir, write_walq_config(workdir, {}))
    res = home.run("check", "--nagios")
    assert (res.returncode, res.stdout.splitlines()) == (
        3,
        ["WALQ UNKNOWN - no servers configured ([servers.NAME] tables)"],
    )
    res = home.run("check", "--json")
    assert res.returncode == 1 and json.loads(res.stdout) == {"status": "failed", "checks": []}
    res = home.run("check", "--nagios", "--json")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


# -- the archiver dies under a live PostgreSQL ----------------------------------------------


def produce_wal(pg: Cluster) -> str:
    pg.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
    return pg.switch_wal()


def test_check_fails_when_the_archiver_dies(
    cluster_factory, make_home, walq_runnable_by_postgres
) -> None:
    pg = cluster_factory("pg")
    home = make_home({"pg1": {"conninfo": pg.conninfo}})
    config_text = home.config_path.read_text()
    pg.configure(
        {"archive_mode": "on", "archive_command": f"'{walq_command(home, 'put-wal', 'pg1', '%p')}'"}
    )
    home.run("archive", "pg1", check=True)  # creates the directories
    chown_postgres(home.root)  # archive_command (postgres) writes into incoming/
    pg.start()

    # Archiving works: WAL produced, handed over by archive_command, archived once.
    pg.wait_archived(produce_wal(pg))
    home.run("archive", "pg1", check=True)
    res = home.run("check", "pg1", timeout=120)
    assert res.returncode == 0 and not failed(res), res.stdout
    code, m, perf = nagios(home)
    assert code == 0 and m["state"] == "OK", m.group(0)
    assert perf["pg1_queue"][0] == 0 and "pg1_last_archived_age_seconds" in perf
    code, doc = as_json(home)
    assert code == 0 and doc["status"] == "ok" and not json_failed(doc)
    assert {c["check"] for c in doc["checks"]} >= {*PROGRESS_CHECKS, "PostgreSQL reachable"}
    assert {c["status"] for c in doc["checks"]} <= {"ok", "skipped"}

    # The archiver dies (no walq archive from now on) while PostgreSQL keeps producing WAL.
    home.config_path.write_text(config_text + 'archive_lag_maximum = "1 second"\n')
    last = ""
    for _ in range(3):
        last = produce_wal(pg)
    pg.wait_archived(last)  # archive_command succeeded: PostgreSQL's side is healthy
    assert (home.incoming() / last).exists()

    res = check_until_failed(home, "archiver progress")
    assert res.returncode == 1
    assert failed(res) == {"archiver progress"}, res.stdout  # PostgreSQL's checks all pass
    detail = lines(res)["archiver progress"][1]
    assert re.search(r"maximum 1s, \d+ file\(s\) waiting; is walq archive or the fleet", detail)

    code, m, perf = nagios(home)
    assert code == 2 and m["state"] == "CRITICAL", m.group(0)
    assert m["text"].startswith("pg1: archiver progress (oldest waiting "), m.group(0)
    waited, crit = perf["pg1_oldest_waiting_seconds"]
    assert waited >= 1 and crit == "1"
    assert perf["pg1_queue"][0] >= 3

    code, doc = as_json(home)
    assert code == 1 and doc["status"] == "failed"
    assert json_failed(doc) == {"archiver progress"}
    entry = next(c for c in doc["checks"] if c["check"] == "archiver progress")
    assert set(entry) == {"server", "check", "status", "detail"} and entry["server"] == "pg1"

    # The archiver comes back: check passes again.
    home.run("archive", "pg1", check=True)
    res = home.run("check", "pg1", timeout=120)
    assert res.returncode == 0 and not failed(res), res.stdout


def test_an_internal_error_is_unknown_for_nagios(walq_home: WalqHome, monkeypatch, capsys) -> None:
    """A bug (injected: no real part raises on demand) is UNKNOWN (3), one line on stdout."""
    from walq import cli
    from walq.report import checks

    def broken(*_a, **_k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(checks, "run_checks", broken)
    assert cli.main(["--config", str(walq_home.config_path), "check", "--nagios"]) == 3
    out = capsys.readouterr()
    assert out.out == "WALQ UNKNOWN - internal error: RuntimeError: boom second line\n"
    assert out.err == ""
    assert cli.main(["--config", str(walq_home.config_path), "check", "--json"]) == 2
    assert capsys.readouterr().err == "walq: internal error: RuntimeError: boom second line\n"


def test_an_unlistable_incoming_dir_is_reported_once(
    walq_home: WalqHome, walq_runnable_by_postgres
) -> None:
    """Writable but not listable: walq archive cannot see what waits, so progress fails.
    Not a directory at all: ``incoming_dir writable`` fails, progress is SKIPPED."""
    walq_home.run("check", "pg1", as_pg=True)  # creates the tree, hands it to postgres
    incoming = walq_home.incoming()
    incoming.chmod(0o300)  # writable, not listable, for its owner
    try:
        res = walq_home.run("check", "pg1", as_pg=True)
    finally:
        incoming.chmod(0o700)
    assert res.returncode == 1
    found = lines(res)
    assert found["archiver progress"][0] == "FAILED", found
    assert found["archiver progress"][1].startswith(f"cannot list {incoming}"), found
    assert found["incoming_dir writable"][0] == "OK"

    text = walq_home.config_path.read_text()
    walq_home.config_path.write_text(text + 'incoming_dir = "/dev/null/incoming"\n')
    res = walq_home.run("check", "pg1")
    assert failed(res) == {"incoming_dir writable"}, res.stdout
    assert lines(res)["archiver progress"] == (
        "SKIPPED",
        "cannot list /dev/null/incoming: Not a directory",
    )
