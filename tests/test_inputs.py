"""Unchecked inputs (issue 10: D5, D10, check/status): every one refused through the
real CLI with one line, the documented exit code, nothing changed and no secret shown.

- D5: a malformed or unreachable ``catalog_url`` (and broker/lock URLs, server
  conninfo) fails at once, with its password masked, never through a library's
  log line; the subprocess timeout is the deadline, not a timed assertion.
- D10: put-wal refuses a segment of the wrong size (real WAL, truncated or padded)
  and leaves nothing in incoming/; ``--prefetch`` is bounded.
- check says SKIPPED for a check that did not run; status/check say when there
  are no servers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.gpg import GpgKey, gpg_settings
from tests.services.homes import WALQ, WalqHome
from tests.services.pg import free_port

SECRET = "SECRET-pw-4711"
DEADLINE = 20  # seconds: the old code waited 30 s for the pool; a hang fails the test


def run_walq(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(WALQ), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, **(env or {})},
    )


def one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("walq: "), res.stderr
    return lines[0]


def write(root: Path, text: str) -> Path:
    (root / "home").mkdir(exist_ok=True)
    path = root / "walq.toml"
    path.write_text(f'home = "{root / "home"}"\n' + text)
    return path


def incoming_entries(home: WalqHome) -> list[str]:
    return sorted(os.listdir(home.incoming())) if home.incoming().exists() else []


# -- D5: secrets in URLs ------------------------------------------------------------


def test_malformed_catalog_url_is_refused_at_once_with_the_password_masked(workdir: Path) -> None:
    """The issue's reproduction: psycopg_pool logged the password five times, then 30 s of waiting."""
    config = write(
        workdir, f'catalog_url = "postgresql//walq:{SECRET}@127.0.0.1/db"\n[servers.pg1]\n'
    )
    res = run_walq(config, "list", "pg1")
    assert res.returncode == 2
    line = one_line(res)
    assert SECRET not in res.stdout + res.stderr
    assert "catalog_url" in line and "postgresql//walq:********@127.0.0.1/db" in line
    assert not (workdir / "home" / "catalog.sqlite").exists()


def test_unreachable_catalog_fails_fast_without_the_password(workdir: Path) -> None:
    config = write(
        workdir,
        f'catalog_url = "postgresql://walq:{SECRET}@127.0.0.1:{free_port()}/db"\n[servers.pg1]\n',
    )
    for args in (["list", "pg1"], ["status"], ["check", "pg1"]):
        res = run_walq(config, *args)
        assert res.returncode == 2, res
        line = one_line(res)
        assert "catalog_url: cannot connect" in line and "refused" in line.lower()
        assert SECRET not in res.stdout + res.stderr


@pytest.mark.parametrize(
    "text",
    [
        f'catalog_url = "postgresql://walq:{SECRET} x@127.0.0.1/db"',  # a space libpq would quote whole
        f'catalog_url = "postgresql://walq:{SECRET}%ZZ@127.0.0.1/db"',  # libpq quotes the bad escape alone
        f'catalog_url = "postgresql://walq:{SECRET}@127.0.0.1:port/db"',
        f'catalog_url = "host=127.0.0.1 password={SECRET}"',
        f'broker_url = "redis//:{SECRET}@127.0.0.1:6379/0"',
        f'broker_url = "redis://:{SECRET}@127.0.0.1:6379/zero"',
        f'lock_url = "redis://:{SECRET}@127.0.0.1:nope/1"',
        f'lock_url = "http://:{SECRET}@127.0.0.1/1"',
        f'[servers.pg2]\nconninfo = "postgresql//walq:{SECRET}@127.0.0.1/db"',
        f'[servers.pg2]\nconninfo = "host=127.0.0.1 password=\'{SECRET}"',
    ],
)
def test_bad_urls_are_refused_at_load_with_the_password_masked(text: str, workdir: Path) -> None:
    top, _, table = text.partition("\n")
    config = write(
        workdir, f"{top}\n[servers.pg1]\n" if not table else f"[servers.pg1]\n{top}\n{table}\n"
    )
    res = run_walq(config, "list", "pg1")
    assert res.returncode == 2, res
    line = one_line(res)
    assert SECRET not in res.stdout + res.stderr and SECRET.split("-")[0] not in line
    key = text.split("=")[0].split("\n")[-1].strip()
    assert key in line, line


def test_bad_url_from_the_environment_is_masked_too(workdir: Path) -> None:
    config = write(workdir, "[servers.pg1]\n")
    res = run_walq(
        config, "status", env={"WALQ_CATALOG_URL": f"postgres:/walq:{SECRET}@127.0.0.1/db"}
    )
    assert res.returncode == 2
    assert "catalog_url" in one_line(res) and SECRET not in res.stdout + res.stderr


def test_well_formed_urls_still_load(workdir: Path) -> None:
    from walq.config import load_config

    config = write(
        workdir,
        (
            f'broker_url = "redis://:{SECRET}@127.0.0.1:6379/0"\nlock_url = "unix:///run/redis.sock?db=1"\n'
            'catalog_url = "postgresql://walq@h1:5432,h2:5433/walq?sslmode=require"\n'
            f"[servers.pg1]\nconninfo = \"host=/tmp port=5432 user=walq password='a b\\\\' c'\"\n"
            '[servers.pg2]\nconninfo = "postgres://walq@db/postgres"\n'
        ),
    )
    cfg = load_config(config)
    assert cfg.servers["pg1"].conninfo == "host=/tmp port=5432 user=walq password='a b\\' c'"
    assert "a b" not in str(cfg.servers["pg1"].safe_dict())


def test_psycopg_pool_log_lines_never_carry_the_password(caplog: pytest.LogCaptureFixture) -> None:
    """psycopg_pool logs each failed attempt with libpq's message, which quotes a
    malformed conninfo whole; importing walq's catalog masks those lines."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    import walq.catalog.postgres  # noqa: F401 - installs the masking filter

    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    pool = ConnectionPool(
        f"postgresql//walq:{SECRET}@127.0.0.1/db", min_size=1, open=False, name="t"
    )
    try:
        pool.open(wait=False)
        with pytest.raises(PoolTimeout):
            pool.wait(timeout=1.5)
    finally:
        pool.close()
    attempts = [
        r
        for r in caplog.records
        if r.name == "psycopg.pool" and "error connecting" in r.getMessage()
    ]
    assert attempts, caplog.text
    assert SECRET not in caplog.text and "walq:********@" in caplog.text


def test_server_conninfo_errors_are_masked(make_home) -> None:
    """A well-formed conninfo to a closed port: check fails with one masked reason."""
    home = make_home(
        {"pg1": {"conninfo": f"postgresql://walq:{SECRET}@127.0.0.1:{free_port()}/postgres"}}
    )
    res = home.run("check", "pg1", timeout=DEADLINE)
    assert res.returncode == 1
    assert "PostgreSQL reachable: FAILED" in res.stdout
    assert SECRET not in res.stdout + res.stderr


# -- D10: put-wal sizes ---------------------------------------------------------------


def _segment_variant(kind: str, data: bytes) -> bytes:
    return {
        "empty": b"",
        "shorter than a page header": data[:20],
        "truncated": data[: len(data) // 2],
        "one byte short": data[:-1],
        "padded": data + b"\0" * 8192,
        "doubled": data + data,
    }[kind]


@pytest.mark.parametrize(
    "kind",
    ["empty", "shorter than a page header", "truncated", "one byte short", "padded", "doubled"],
)
def test_put_wal_refuses_a_segment_of_the_wrong_size(
    kind: str, walq_home: WalqHome, wal_corpus
) -> None:
    name = wal_corpus.segments[3]
    src = walq_home.root / "pg_wal" / name
    src.parent.mkdir()
    src.write_bytes(_segment_variant(kind, wal_corpus.path(name).read_bytes()))
    res = walq_home.run("put-wal", "pg1", str(src))
    assert res.returncode == 2, res
    line = one_line(res)
    assert (
        str(src) in line
        and str(wal_corpus.seg_size) in line
        and f"{src.stat().st_size} bytes" in line
    )
    assert incoming_entries(walq_home) == []


def test_put_wal_names_the_learned_segment_size_for_an_empty_file(
    walq_home: WalqHome, wal_corpus
) -> None:
    first, other = wal_corpus.segments[:2]
    assert walq_home.run("put-wal", "pg1", str(wal_corpus.path(first))).returncode == 0
    walq_home.run("archive", check=True)  # the catalog learns the segment size
    src = walq_home.root / other
    src.write_bytes(b"")
    res = walq_home.run("put-wal", "pg1", str(src))
    assert res.returncode == 2
    assert one_line(res) == (
        f"walq: {src}: 0 bytes, expected {wal_corpus.seg_size} "
        "(servers.pg1's segment size); not copied"
    )
    assert incoming_entries(walq_home) == []


def test_put_wal_still_accepts_partial_history_and_backup_files(
    walq_home: WalqHome, wal_corpus
) -> None:
    name = wal_corpus.segments[5]
    data = wal_corpus.path(name).read_bytes()
    partial = walq_home.root / f"{name}.partial"
    partial.write_bytes(data[: len(data) // 2])
    history = walq_home.root / "00000002.history"
    history.write_text("1\t0/5000000\tno recovery target specified\n")
    assert walq_home.run("put-wal", "pg1", str(partial)).returncode == 0
    assert walq_home.run("put-wal", "pg1", str(history)).returncode == 0
    assert incoming_entries(walq_home) == sorted([partial.name, history.name])
    too_big = walq_home.root / f"{wal_corpus.segments[6]}.partial"
    too_big.write_bytes(data + b"\0")
    res = walq_home.run("put-wal", "pg1", str(too_big))
    assert res.returncode == 2 and f"at most {wal_corpus.seg_size}" in one_line(res)
    empty_history = walq_home.root / "00000003.history"
    empty_history.write_bytes(b"")
    res = walq_home.run("put-wal", "pg1", str(empty_history))
    assert res.returncode == 2 and str(empty_history) in one_line(res)
    assert incoming_entries(walq_home) == sorted([partial.name, history.name])


# -- D10: --prefetch bounds -----------------------------------------------------------


@pytest.mark.parametrize("value", ["5000000", "257", "-1", "abc"])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_prefetch_out_of_range_is_refused(
    value: str, form: str, walq_home: WalqHome, wal_corpus
) -> None:
    """Refused by the full CLI and by the fast path (a spool hit is not served with it)."""
    name = wal_corpus.segments[0]
    spool = walq_home.home / "restore-spool" / "pg1"
    spool.mkdir(parents=True)
    (spool / name).write_bytes(wal_corpus.path(name).read_bytes())
    dest = walq_home.root / "RECOVERYXLOG"
    flag = ["--prefetch", value] if form == "separate" else [f"--prefetch={value}"]
    res = walq_home.run("get-wal", "pg1", name, str(dest), *flag)
    assert res.returncode == 2, res
    line = one_line(res)
    assert "--prefetch" in line and "0 to 256" in line
    assert not dest.exists() and (spool / name).is_file()
    assert sorted(os.listdir(spool)) == [name]  # no prefetcher was started


def test_prefetcher_entry_point_refuses_an_unbounded_count(walq_home: WalqHome, wal_corpus) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "walq.restore.prefetch",
            "--config",
            str(walq_home.config_path),
            "pg1",
            wal_corpus.segments[0],
            "5000000",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert res.returncode == 2 and "count" in res.stderr and "0 to 256" in res.stderr


# -- check and status -----------------------------------------------------------------


def check_lines(res: subprocess.CompletedProcess) -> dict[str, str]:
    lines = {}
    for line in res.stdout.splitlines():
        server, name, status = line.split(": ", 2)
        lines[name] = status
    return lines


def test_check_without_conninfo_says_skipped_not_ok(walq_home: WalqHome) -> None:
    res = walq_home.run("check", "pg1")
    assert res.returncode == 0, res
    assert "pg1: PostgreSQL: SKIPPED (no conninfo)" in res.stdout.splitlines()
    assert "PostgreSQL: OK" not in res.stdout


def test_streaming_server_without_conninfo_still_checks_its_receiver(make_home) -> None:
    home = make_home({"pg1": {"streaming_archiver": True}})
    res = home.run("check", "pg1")
    assert res.returncode == 1
    lines = check_lines(res)
    assert lines["PostgreSQL"] == "SKIPPED (no conninfo)"
    assert lines["receiver running"].startswith("FAILED")


def test_unrecorded_system_identifier_is_skipped(cluster_factory, make_home) -> None:
    pg = cluster_factory("pg")
    pg.start()
    home = make_home({"pg1": {"conninfo": pg.conninfo}})
    res = home.run("check", "pg1", timeout=120)
    lines = check_lines(res)
    assert lines["PostgreSQL reachable"].startswith("OK")
    assert lines["system identifier matches"].startswith("SKIPPED (PostgreSQL ")
    assert "not yet recorded" not in res.stdout


def test_decryption_without_passphrase_command_is_skipped(gpg_env: GpgKey, make_home) -> None:
    settings = {
        k: v for k, v in gpg_settings(gpg_env).items() if k != "encryption_passphrase_command"
    }
    home = make_home({"pg1": settings})
    res = home.run("check", "pg1")
    lines = check_lines(res)
    assert lines["encryption key"].startswith("OK") and "not checked" not in lines["encryption key"]
    assert lines["decryption"] == "SKIPPED (no encryption_passphrase_command)"
    assert res.returncode == 0


def test_unreadable_errors_directory_is_not_reported_empty(
    walq_home: WalqHome, walq_runnable_by_postgres
) -> None:
    errors = walq_home.errors()
    errors.mkdir(parents=True)
    (errors / "000000010000000000000009").write_bytes(b"parked")
    walq_home.run("check", "pg1", as_pg=True)  # hands the tree to postgres
    errors.chmod(0o300)  # writable, not listable, for its owner
    res = walq_home.run("check", "pg1", as_pg=True)
    errors.chmod(0o700)
    assert res.returncode == 1
    assert check_lines(res)["errors directory empty"].startswith("FAILED (cannot list")


def test_no_servers_is_said_and_check_fails(workdir: Path) -> None:
    config = write(workdir, "")
    status = run_walq(config, "status")
    assert (
        status.returncode == 0
        and "no servers configured" in one_line(status)
        and status.stdout == ""
    )
    as_json = run_walq(config, "status", "--json")
    assert (
        as_json.returncode == 0
        and '"servers": []' in as_json.stdout
        and "no servers" in one_line(as_json)
    )
    check = run_walq(config, "check")
    assert check.returncode == 1 and "no servers configured" in one_line(check)
    archive = run_walq(config, "archive")
    assert archive.returncode == 2 and "no servers configured" in one_line(archive)
    for args in (["list", "pg1"], ["verify", "pg1"], ["retry", "pg1", "--all-failed"]):
        res = run_walq(config, *args)
        assert res.returncode == 2 and "(configured: none)" in one_line(res)


def test_archive_workers_is_bounded(workdir: Path) -> None:
    """The same class as --prefetch: a count that sizes a pool has an upper bound."""
    config = write(workdir, "archive_workers = 5000000\n[servers.pg1]\n")
    res = run_walq(config, "archive")
    assert res.returncode == 2 and "archive_workers" in one_line(res)
