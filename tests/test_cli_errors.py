"""One line on stderr and the right exit code, never a traceback (issue 10, D7).

Exit 1 from get-wal tells PostgreSQL "not in the archive"; every other failure
must be exit 2 with one line naming what is wrong. Each case runs the real
``walq`` command.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.services.config_file import write_walq_config
from tests.services.homes import WALQ, WalqHome


def one_error_line(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr if isinstance(res.stderr, str) else res.stderr.decode()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("walq: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def archived(walq_home: WalqHome, wal_corpus) -> str:
    """One real WAL archived in walq_home; its name."""
    name = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:1])[0]
    walq_home.run("archive", check=True)
    return name


def test_get_wal_into_a_missing_directory(
    walq_home: WalqHome, archived: str, workdir: Path
) -> None:
    dest = workdir / "no-such-dir" / "RECOVERYXLOG"
    one_error_line(
        walq_home.run("get-wal", "pg1", archived, str(dest)), str(dest.parent), "does not exist"
    )


def test_get_wal_into_an_unwritable_directory(
    walq_home: WalqHome, archived: str, walq_runnable_by_postgres
) -> None:
    walq_home.give_to_postgres()
    with tempfile.TemporaryDirectory(prefix="walq-ro-") as ro:  # root's, mode 0700
        os.chmod(ro, 0o755)
        dest = Path(ro) / "RECOVERYXLOG"
        res = walq_home.run("get-wal", "pg1", archived, str(dest), as_pg=True)
        one_error_line(res, ro, "not writable")
        assert not dest.exists()


def test_get_wal_into_a_non_regular_destination_is_refused(
    walq_home: WalqHome, archived: str, workdir: Path
) -> None:
    """/dev/stdout is a symlink to /proc/self/fd/1: the rename replaced the link itself
    (as root, /dev/stdout became a regular file). The same shape is built in workdir so
    that running this test against unfixed code harms nothing outside it."""
    stdout_link = workdir / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")
    fifo = workdir / "fifo"
    os.mkfifo(fifo)
    one_error_line(
        walq_home.run("get-wal", "pg1", archived, str(stdout_link)), str(stdout_link), "use -"
    )
    one_error_line(
        walq_home.run("get-wal", "pg1", archived, str(fifo)), str(fifo), "not a regular file"
    )
    one_error_line(
        walq_home.run("get-wal", "pg1", archived, str(workdir)), str(workdir), "directory"
    )
    assert stdout_link.is_symlink() and os.readlink(stdout_link) == "/proc/self/fd/1"
    assert fifo.is_fifo()


def test_get_wal_to_dash_writes_verified_bytes_to_stdout(
    walq_home: WalqHome, archived: str, wal_corpus, workdir: Path
) -> None:
    res = subprocess.run(
        [str(WALQ), "--config", str(walq_home.config_path), "get-wal", "pg1", archived, "-"],
        capture_output=True,
        cwd=workdir,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == wal_corpus.path(archived).read_bytes()
    assert not (workdir / "-").exists()
    missing = subprocess.run(
        [
            str(WALQ),
            "--config",
            str(walq_home.config_path),
            "get-wal",
            "pg1",
            "00000005.history",
            "-",
        ],
        capture_output=True,
        cwd=workdir,
    )
    assert missing.returncode == 1 and missing.stdout == b""


def test_storage_url_that_is_a_file(make_home, wal_corpus) -> None:
    home: WalqHome = make_home({"pg1": {"storage_url": "file:///etc/passwd"}})
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    one_error_line(home.run("archive"), "/etc/passwd")
    one_error_line(home.run("verify", "pg1"), "/etc/passwd")
    assert os.listdir(home.incoming()) == [wal_corpus.segments[0]]  # nothing else was touched


def test_status_into_a_closed_pipe_is_quiet(workdir: Path) -> None:
    """`walq status | head -1`: enough servers that the output outgrows the pipe."""
    (workdir / "home").mkdir()
    config = write_walq_config(workdir, {f"pg{i}": {} for i in range(400)})
    proc = subprocess.Popen(
        [str(WALQ), "--config", str(config), "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"Server ")
    proc.stdout.close()  # what head does after its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == b""


def test_bad_environment_override_names_the_variable(walq_home: WalqHome) -> None:
    env = {**os.environ, "WALQ_SERVERS__PG1__COMPRESSION": "zip"}
    res = subprocess.run(
        [str(WALQ), "--config", str(walq_home.config_path), "status"],
        capture_output=True,
        text=True,
        env=env,
    )
    one_error_line(res, "environment variable WALQ_SERVERS__PG1__COMPRESSION", "'zip'")
    assert str(walq_home.config_path) not in res.stderr


def test_check_prints_gaps_readably(walq_home: WalqHome, wal_corpus) -> None:
    segs = wal_corpus.segments
    wal_corpus.copy_into(walq_home.incoming(), [segs[0], segs[2], segs[6]])
    walq_home.run("archive", check=True)
    res = walq_home.run("check", "pg1")
    line = next(ln for ln in res.stdout.splitlines() if "no gaps" in ln)
    assert line == f"pg1: no gaps: FAILED (2 gap(s): {segs[1]}, {segs[3]}..{segs[5]})"
    assert res.returncode == 1


def test_unexpected_error_is_one_line_and_a_traceback_only_on_request(
    walq_home: WalqHome, monkeypatch, capsys
) -> None:
    """The safety net: a bug (injected, no real part raises on demand) is still one line."""
    from walq import cli
    from walq.report import status

    def broken(*_a, **_k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(status, "server_status", broken)
    assert cli.main(["--config", str(walq_home.config_path), "status"]) == 2
    err = capsys.readouterr().err
    assert err == "walq: internal error: RuntimeError: boom second line\n"
    monkeypatch.setenv("WALQ_DEBUG", "1")
    assert cli.main(["--config", str(walq_home.config_path), "status"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith(
        "walq: internal error: RuntimeError: boom second line\n"
    )


def test_fast_path_leaves_odd_destinations_to_the_full_cli(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    """A spooled WAL must not be renamed onto a symlink such as /dev/stdout or a file named '-'."""
    from walq.restore.spool_hit import spool_hit

    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    spool.mkdir(parents=True)
    (spool / names[1]).write_bytes(wal_corpus.path(names[1]).read_bytes())
    link = workdir / "link"
    link.symlink_to(workdir / "target")
    for dest in (str(link), "-"):
        assert (
            spool_hit(["--config", str(walq_home.config_path), "get-wal", "pg1", names[1], dest])
            is None
        )
    assert (spool / names[1]).exists() and not link.exists()
    assert (
        spool_hit(
            [
                "--config",
                str(walq_home.config_path),
                "get-wal",
                "pg1",
                names[1],
                "--prefetch",
                "²",
                str(workdir / "out"),
            ]
        )
        is None
    )


def test_get_wal_from_the_spool_to_stdout(walq_home: WalqHome, wal_corpus, workdir: Path) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    spool.mkdir(parents=True)
    (spool / names[1]).write_bytes(wal_corpus.path(names[1]).read_bytes())
    res = subprocess.run(
        [str(WALQ), "--config", str(walq_home.config_path), "get-wal", "pg1", names[1], "-"],
        capture_output=True,
        cwd=workdir,
    )
    assert res.returncode == 0 and res.stdout == wal_corpus.path(names[1]).read_bytes()
    assert not (spool / names[1]).exists() and not (workdir / "-").exists()
