"""Synchronous streaming: the receiver is a synchronous standby when
synchronous_standby_names names its application_name (streaming_archiver_name).

The parser is checked form by form, then against a real PostgreSQL (it accepts
exactly the values the parser accepts); the end-to-end test makes a real commit
wait for a stopped receiver and return once it runs again.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg
import pytest

from tests.services.homes import WalqHome
from tests.services.pg import Cluster, wait_for
from tests.services.receiver import Receiver
from walq.config import ServerConfig
from walq.errors import ConfigError
from walq.postgres.receiver import application_name, build_command
from walq.postgres.syncrep import (
    SyncStandbys,
    names_standby,
    parse_sync_standbys,
    sync_verdict,
    sync_view,
)

PARSED = [
    ("", None),
    ("walq_receive_wal", SyncStandbys("priority", 1, ("walq_receive_wal",))),
    ("*", SyncStandbys("priority", 1, ("*",))),
    ("a, walq_receive_wal", SyncStandbys("priority", 1, ("a", "walq_receive_wal"))),
    ("2 (a, b)", SyncStandbys("priority", 2, ("a", "b"))),
    ("FIRST 2 (a, b, c)", SyncStandbys("priority", 2, ("a", "b", "c"))),
    ("first 1(a)", SyncStandbys("priority", 1, ("a",))),
    ("ANY 2 (a, b, c)", SyncStandbys("quorum", 2, ("a", "b", "c"))),
    ("any 1 (*)", SyncStandbys("quorum", 1, ("*",))),
    ('"FIRST", "any"', SyncStandbys("priority", 1, ("FIRST", "any"))),
    ('FIRST 1 ("walq receive", "a""b")', SyncStandbys("priority", 1, ("walq receive", 'a"b'))),
    ('"*"', SyncStandbys("priority", 1, ("*",))),
    ("anyone, firstly", SyncStandbys("priority", 1, ("anyone", "firstly"))),
    ("s$1, 12", SyncStandbys("priority", 1, ("s$1", "12"))),
    ("\tA ,\n b ", SyncStandbys("priority", 1, ("A", "b"))),
]

REFUSED = [
    "   ",  # only the empty string means "no synchronous standby"
    "first, b",  # a keyword as a name must be quoted
    "a, any",
    "ANY (a)",
    "FIRST 0 (a)",
    "ANY 1 a",
    "FIRST 1 (a",
    "FIRST 1 (a) b",
    "a (b)",
    "(a)",
    "a b",
    "a,",
    ",a",
    "a.b",
    "walq-receive",
    '"unterminated',
    "1abc",
]


@pytest.mark.parametrize(("setting", "expected"), PARSED)
def test_parse_every_form(setting: str, expected: SyncStandbys | None) -> None:
    assert parse_sync_standbys(setting) == expected


@pytest.mark.parametrize("setting", REFUSED)
def test_parse_refuses_what_postgresql_refuses(setting: str) -> None:
    with pytest.raises(ValueError):
        parse_sync_standbys(setting)
    assert names_standby(setting, "a") is False


@pytest.mark.parametrize(
    ("setting", "name", "named"),
    [
        ("walq_receive_wal", "walq_receive_wal", True),
        ("WALQ_Receive_WAL", "walq_receive_wal", True),  # PostgreSQL compares ignoring case
        ('"WALQ_RECEIVE_WAL"', "walq_receive_wal", True),  # quoted names too
        ("*", "walq_receive_wal", True),
        ('FIRST 1 (a, "*")', "walq_receive_wal", True),
        ("ANY 1 (a, walq_receive_wal)", "walq_receive_wal", True),
        ("2 (a, walq_receive_wal)", "walq_receive_wal", True),
        ("walq_receive_wal_2", "walq_receive_wal", False),  # whole names, not substrings
        ("walq", "walq_receive_wal", False),
        ("", "walq_receive_wal", False),
        ('"walq receive"', "walq receive", True),
        ('"FIRST"', "first", True),
        ("a, b", "walq_receive_wal", False),
    ],
)
def test_names_standby(setting: str, name: str, named: bool) -> None:
    assert names_standby(setting, name) is named


def test_priority_follows_postgresql() -> None:
    assert parse_sync_standbys("a, b, c").priority("C") == 3  # type: ignore[union-attr]
    assert parse_sync_standbys("ANY 2 (a, b, c)").priority("c") == 1  # type: ignore[union-attr]
    assert parse_sync_standbys("FIRST 1 (a, *)").priority("z") == 2  # type: ignore[union-attr]
    assert parse_sync_standbys("a").priority("b") == 0  # type: ignore[union-attr]


def test_verdict() -> None:
    def verdict(setting: str, state: str | None, started: bool | None) -> tuple[bool, str]:
        return sync_verdict(sync_view("walq_receive_wal", setting, state, 1, started))

    ok, detail = verdict("", None, None)
    assert ok and detail.startswith("no: asynchronous")
    assert verdict("other", "async", False)[0]  # not named: information only
    ok, detail = verdict("walq_receive_wal", "sync", True)
    assert ok and detail.startswith("yes: sync standby")
    assert verdict("FIRST 1 (a, walq_receive_wal)", "potential", True)[0]
    ok, detail = verdict("walq_receive_wal", None, None)
    assert not ok and "no receiver is connected" in detail
    ok, detail = verdict("walq_receive_wal", "sync", False)
    assert not ok and "without --synchronous" in detail
    assert not verdict("walq_receive_wal", "async", True)[0]


def test_application_name_and_command() -> None:
    server = ServerConfig(name="pg1", conninfo="host=/tmp port=5432 user=walq")
    assert application_name(server) == "walq_receive_wal"
    argv, _ = build_command(server, "pg_receivewal", synchronous=True)
    assert argv[-1] == "--synchronous"
    assert "application_name=walq_receive_wal" in argv[1]
    assert "--synchronous" not in build_command(server, "pg_receivewal")[0]
    named = ServerConfig(name="pg1", conninfo="host=/tmp", streaming_archiver_name="barman_pg1")
    assert "application_name=barman_pg1" in build_command(named, "pg_receivewal")[0][1]
    # the conninfo's own application_name wins, as in Barman
    own = ServerConfig(name="pg1", conninfo="host=/tmp application_name=mine")
    assert application_name(own) == "mine"
    assert "application_name=mine" in build_command(own, "pg_receivewal")[0][1]


def test_streaming_archiver_name_is_checked(make_home) -> None:
    home = make_home({"pg1": {"streaming_archiver_name": "x" * 64}})
    with pytest.raises(ConfigError, match="servers.pg1.streaming_archiver_name"):
        _ = home.config
    res = home.run("status")
    assert res.returncode == 2 and "streaming_archiver_name" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_parser_agrees_with_postgresql(cluster_factory) -> None:
    """PostgreSQL refuses (ALTER SYSTEM checks the value) exactly what the parser refuses."""
    pg = cluster_factory("syntax").start()
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        for setting, _ in PARSED:  # ALTER SYSTEM refuses newlines; any space is one to the scanner
            value = setting.replace("\n", " ")
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
        for setting in REFUSED:
            quoted = setting.replace("'", "''")
            with pytest.raises(psycopg.Error):
                conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{quoted}'")
        conn.execute("ALTER SYSTEM RESET synchronous_standby_names")


# ------------------------------------------------------------------ end to end


class Commit(threading.Thread):
    """One INSERT committed on its own connection, in the background (it may wait for
    the synchronous standby); its backend pid is known before it commits."""

    def __init__(self, cluster: Cluster, value: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.value = cluster, value
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.cluster.conninfo, autocommit=True) as conn:
                self.pid = conn.info.backend_pid
                self.ready.set()
                conn.execute("INSERT INTO t VALUES (%s)", (self.value,))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ready.set()

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"the commit of {self.value} did not return"
        assert self.error is None, self.error


def sync_home(make_home, cluster: Cluster, name: str) -> WalqHome:
    home = make_home(
        {
            "pg1": {
                "conninfo": cluster.conninfo,
                "archiver": False,
                "streaming_archiver": True,
                "streaming_archiver_name": name,
            }
        }
    )
    home.run("receive-wal", "pg1", "--create-slot", check=True)
    return home


def child_cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def check_line(home: WalqHome, name: str) -> str:
    """``walq check``'s line for one check (``pg1: NAME: STATUS (detail)``)."""
    out = home.run("check", "pg1").stdout
    return next(line for line in out.splitlines() if line.startswith(f"pg1: {name}: "))


def test_commit_waits_for_the_synchronous_receiver(cluster_factory, make_home) -> None:
    # FIRST n, a quoted name in other letters: PostgreSQL and walq both ignore the case.
    src = cluster_factory(
        "src",
        conf={
            "synchronous_standby_names": "'FIRST 1 (\"WALQ_Sync_PG1\")'",
            "synchronous_commit": "on",
        },
    ).start()
    # no synchronous standby runs yet: this one commit does not wait for it
    src.psql("BEGIN; SET LOCAL synchronous_commit = local; CREATE TABLE t (v int); COMMIT")
    home = sync_home(make_home, src, "walq_sync_pg1")
    rec = Receiver(home).start()
    try:
        child = rec.wait_streaming()
        assert "--synchronous" in child_cmdline(child)
        assert "streaming with --synchronous" in rec.log()
        wait_for(
            lambda: (
                src.psql(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'walq_sync_pg1'"
                )
                == "sync"
            ),
            60,
            "the receiver to be the synchronous standby",
        )
        # pg_receivewal flushes and reports every message: a commit returns at once,
        # never waiting for its segment to end
        first = Commit(src, 1)
        first.start()
        first.finish(timeout=60)

        st = json.loads(home.run("status", "pg1", "--json", check=True).stdout)["servers"][0]
        sync = st["postgres"]["synchronous"]
        assert sync["named"] and sync["sync_state"] == "sync" and sync["started_synchronous"]
        assert st["receiver"]["synchronous"] is True
        assert "synchronous:      yes (sync)" in home.run("status", "pg1", check=True).stdout
        line = check_line(home, "synchronous streaming")
        assert "OK" in line and "yes: sync standby" in line, line

        assert rec.stop() == 0
        wait_for(
            lambda: (
                src.psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
                == "0"
            ),
            60,
            "the synchronous standby to disconnect",
        )
        line = check_line(home, "synchronous streaming")
        assert "FAILED" in line and "no receiver is connected" in line, line

        # the receiver is stopped: a commit waits for it ...
        second = Commit(src, 2)
        second.start()
        assert second.ready.wait(30) and second.pid
        wait_for(
            lambda: (
                src.psql(f"SELECT wait_event FROM pg_stat_activity WHERE pid = {second.pid}")
                == "SyncRep"
            ),
            60,
            "the commit to wait for the synchronous standby",
        )
        assert second.is_alive() and second.error is None  # has not returned
        # ... and returns once it runs again
        rec = Receiver(home).start()
        rec.wait_streaming()
        second.finish(timeout=120)
        assert src.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t") == "1,2"
    finally:
        if rec.proc is not None and rec.proc.poll() is None:
            rec.stop()


def test_receiver_started_before_the_setting_is_reported(cluster_factory, make_home) -> None:
    """A receiver running without --synchronous when synchronous_standby_names starts naming
    it (a reload, no reconnect): check fails until pg_receivewal restarts; the supervisor
    asks again before each start, so a restart brings --synchronous."""
    src = cluster_factory("src").start()
    home = sync_home(make_home, src, "walq_receive_wal")
    with Receiver(home) as rec:
        child = rec.wait_streaming()
        assert "--synchronous" not in child_cmdline(child)
        line = check_line(home, "synchronous streaming")
        assert "OK" in line and "no: asynchronous" in line, line
        text = home.run("status", "pg1", check=True).stdout
        assert "synchronous:      no (walq_receive_wal is not in" in text, text
        src.psql("ALTER SYSTEM SET synchronous_standby_names = 'walq_receive_wal'")
        src.psql("SELECT pg_reload_conf()")
        wait_for(
            lambda: src.psql("SELECT sync_state FROM pg_stat_replication") == "sync",
            60,
            "PostgreSQL to treat the receiver as synchronous",
        )
        line = check_line(home, "synchronous streaming")
        assert "FAILED" in line and "without --synchronous" in line, line
        text = home.run("status", "pg1", check=True).stdout
        assert "synchronous:      yes (sync, pg_receivewal without --synchronous)" in text, text
        src.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        child = rec.wait_streaming(not_child=child)
        assert "--synchronous" in child_cmdline(child)
        wait_for(
            lambda: "OK" in check_line(home, "synchronous streaming"),
            60,
            "check to accept the restarted receiver",
        )
