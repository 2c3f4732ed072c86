"""What a Barman user reaches for (issue 14): --version, ISO timestamps and a defined lag
in --json, list and verify over every server, archive --quiet for cron.

Each runs the real ``walq`` command on real WAL (the session's corpus); switch-wal
--archive, which needs a live cluster, is in tests/test_switch_wal_archive.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from tests.services.config_file import write_walq_config
from tests.services.homes import WALQ, WalqHome
from walq.catalog import open_catalog
from walq.cli import build_parser
from walq.report.jsontime import TIMESTAMP_KEYS
from walq.report.progress import progress_checks
from walq.report.status import server_status

# -- walq --version ------------------------------------------------------------------


def test_version_is_the_installed_packages(workdir: Path) -> None:
    """No config is needed (none exists in workdir) and nothing else is printed."""
    res = subprocess.run([str(WALQ), "--version"], capture_output=True, text=True, cwd=workdir)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"walq {version('walq')}\n", "")


# -- --json: timestamps in ISO 8601 with a time zone -----------------------------------


def _walk(document: object, path: str = ""):
    """(path, key, value) for every key of every object in a JSON document."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(document, list):
        for i, item in enumerate(document):
            yield from _walk(item, f"{path}[{i}]")


def assert_iso_timestamps(document: object, now: float) -> dict[str, str]:
    """Every timestamp key holds null or ISO 8601 with an offset; no number anywhere looks
    like an epoch from the last year (a timestamp a future key forgot to convert).
    Returns the non-null timestamps by path."""
    found = {}
    for where, key, value in _walk(document):
        if key in TIMESTAMP_KEYS and value is not None:
            assert isinstance(value, str), (where, value)
            parsed = datetime.fromisoformat(value)
            assert parsed.tzinfo is not None and parsed.utcoffset() is not None, (where, value)
            found[where] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            assert not (now - 366 * 86400 < value < now + 86400), (where, value, "an epoch?")
    return found


def test_json_timestamps_are_iso_8601_with_a_time_zone(walq_home: WalqHome, wal_corpus) -> None:
    archived = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:3])
    walq_home.run("archive", check=True)
    waiting = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[3:4])[0]
    now = time.time()

    status = json.loads(walq_home.run("status", "--json", check=True).stdout)
    found = assert_iso_timestamps(status, now)
    st = status["servers"][0]
    assert {
        ".servers[0].last_archived_at",
        ".servers[0].oldest_waiting_since",
        ".servers[0].retention.newest_restorable.time",
    } <= set(found), found
    ctime = (walq_home.incoming() / waiting).lstat().st_ctime
    assert abs(datetime.fromisoformat(st["oldest_waiting_since"]).timestamp() - ctime) < 1e-5
    assert st["last_archived"] == archived[-1]

    rows = json.loads(walq_home.run("list", "--json", check=True).stdout)
    found = assert_iso_timestamps(rows, now)
    assert {r["name"] for r in rows} == set(archived)
    for i in range(len(rows)):
        assert {f"[{i}].{k}" for k in ("archived_at", "claimed_at", "mtime")} <= set(found)
    mtime = datetime.fromisoformat(rows[0]["mtime"]).timestamp()
    assert abs(mtime - wal_corpus.path(rows[0]["name"]).stat().st_mtime) < 1e-3

    check = json.loads(walq_home.run("check", "--json").stdout)  # detail texts only
    assert_iso_timestamps(check, now)


# -- lag: one measure for status and check ---------------------------------------------


def test_status_lag_is_checks_oldest_wait_from_publication_not_mtime(
    walq_home: WalqHome, wal_corpus
) -> None:
    """Three hours of mtime (put-wal keeps PostgreSQL's) are not three hours of waiting;
    the streaming/ file pg_receivewal still writes does not wait; status and check agree."""
    config = walq_home.config
    server = config.servers["pg1"]
    a, b, c = wal_corpus.segments[5:8]
    streaming = walq_home.server_dir() / "streaming"
    streaming.mkdir(parents=True)
    shutil.copy2(wal_corpus.path(b), streaming / b)  # the newest there: held back
    walq_home.incoming().mkdir(parents=True, exist_ok=True)
    shutil.copy2(wal_corpus.path(a), walq_home.incoming() / a)
    three_hours_ago = time.time() - 3 * 3600
    os.utime(walq_home.incoming() / a, (three_hours_ago, three_hours_ago))
    published = (walq_home.incoming() / a).lstat().st_ctime
    assert published > (streaming / b).lstat().st_ctime  # b is older, but not waiting

    catalog = open_catalog(config)
    try:
        for now in (published + 42.0, published + 7200.0):
            st = server_status(catalog, server, now=now)
            assert st["oldest_waiting_since"] == published
            assert st["lag_seconds"] == round(now - published, 1)
            counts = catalog.counts("pg1")
            progress = {r.name: r for r in progress_checks(config, server, st, counts, now=now)}
            measures = {m.label: m.value for m in progress["archiver progress"].measures}
            assert round(measures["oldest_waiting_seconds"], 1) == st["lag_seconds"]
            assert measures["queue"] == 1

        shutil.copy2(wal_corpus.path(c), streaming / c)  # now b waits too, and longer
        st = server_status(catalog, server, now=published + 60)
        assert st["oldest_waiting_since"] == (streaming / b).lstat().st_ctime
    finally:
        catalog.close()
    lag = re.search(r"; lag ([0-9.]+)s$", walq_home.run("status", "pg1").stdout, re.M)
    assert lag and float(lag[1]) < 3600, lag  # an mtime would say three hours


# -- list and verify without SERVER: every server ---------------------------------------


def test_list_and_verify_cover_every_server_without_a_name(make_home, wal_corpus) -> None:
    home = make_home({"pg1": {}, "pg2": {"compression": "lz4"}})
    one = wal_corpus.copy_into(home.incoming("pg1"), wal_corpus.segments[:2])
    two = wal_corpus.copy_into(home.incoming("pg2"), wal_corpus.segments[2:5])
    home.run("archive", check=True)

    listed = home.run("list", check=True).stdout.splitlines()
    assert listed[0].split()[:2] == ["server", "name"]
    assert sorted(tuple(line.split()[:3]) for line in listed[1:]) == sorted(
        [("pg1", n, "archived") for n in one] + [("pg2", n, "archived") for n in two]
    )
    rows = json.loads(home.run("list", "--json", check=True).stdout)
    assert sorted((r["server"], r["name"]) for r in rows) == sorted(
        [("pg1", n) for n in one] + [("pg2", n) for n in two]
    )
    only = home.run("list", "pg2", check=True).stdout.splitlines()  # one server: as before
    assert only[0].split()[0] == "name" and len(only) == 1 + len(two)

    res = home.run("verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        "pg1: 2 WAL(s) read back, 0 problem(s)",
        "pg2: 3 WAL(s) read back, 0 problem(s)",
    ]
    home.stored(two[1], "pg2").unlink()  # a hole in pg2's archive
    res = home.run("verify")
    assert res.returncode == 1
    assert "pg1: 2 WAL(s) read back, 0 problem(s)" in res.stdout
    assert any(line.startswith("pg2: ") and two[1] in line for line in res.stdout.splitlines())
    assert home.run("verify", "pg1").returncode == 0


def test_list_and_verify_with_no_server_configured(workdir: Path) -> None:
    (workdir / "home").mkdir()
    home = WalqHome(workdir, write_walq_config(workdir, {}))
    res = home.run("verify")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == "walq: no servers configured ([servers.NAME] tables): nothing to verify\n"
    res = home.run("list", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == []
    assert res.stderr == "walq: no servers configured ([servers.NAME] tables)\n"


# -- archive --quiet: errors only, for cron mail -----------------------------------------


def test_archive_quiet_is_silent_when_all_is_well_and_names_what_failed(
    walq_home: WalqHome, wal_corpus
) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:4])
    res = walq_home.run("archive", "--quiet")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert len(json.loads(walq_home.run("list", "--json").stdout)) == len(names)
    res = walq_home.run("archive", "--quiet", "pg1")  # nothing to do: silent too
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")

    good = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[4:5])[0]
    bad = wal_corpus.segments[6]
    (walq_home.incoming() / bad).write_bytes(os.urandom(1 << 20))
    res = walq_home.run("archive", "--quiet")
    assert res.returncode == 1 and res.stdout == ""
    err = res.stderr.splitlines()
    assert any(bad in line and "rejected" in line for line in err), res.stderr
    assert not any(good in line for line in err), res.stderr  # only what went wrong
    assert err[-1] == "walq: pg1: 1 archived, 0 duplicate(s) dropped, 1 failed, 0 unknown"

    wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[7:8])
    loud = walq_home.run("archive")  # without --quiet: a line per WAL and the summary
    assert loud.returncode == 0 and wal_corpus.segments[7] in loud.stdout


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("walq",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_and_argument_has_help() -> None:
    """``walq COMMAND --help`` says what the command does and what each argument means."""
    seen = set()
    for path, parser in _parsers(build_parser()):
        seen.add(" ".join(path))
        assert parser.description, f"{' '.join(path)} --help has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                assert action.help, f"{' '.join(path)}: {action.dest} has no help"
    assert {"walq switch-wal", "walq archive", "walq verify", "walq catalog resync"} <= seen
    res = subprocess.run([str(WALQ), "switch-wal", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--archive-timeout SECONDS" in res.stdout
