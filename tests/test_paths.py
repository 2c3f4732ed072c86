"""Where walq deletes and what it creates: overlapping directories, owned trees, file modes.

issue 10: D1 (a spool overlapping a server's directories deleted the archive),
D9 (file modes came from the umask), D10 (relative paths were relative to the
working directory). All on real WAL and the real CLI.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.services.config_file import write_walq_config
from tests.services.homes import WALQ, WalqHome
from tests.services.pg import wait_for
from walq.cli import main
from walq.config import load_config
from walq.errors import ConfigError
from walq.fleet.stages import _sweep_spool
from walq.fsutil import OWNED_MARKER, make_owned_dir, makedirs_durable, set_group_access
from walq.restore import spool as spool_state


def _walq(config: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it, with a given umask."""
    return subprocess.run(
        [str(WALQ), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- D1: a delete zone overlapping data is refused at load time --------------------------


def test_spool_dir_equal_to_home_is_refused_and_the_archive_kept(workdir: Path, wal_corpus) -> None:
    """The issue's reproduction: spool_dir = home made `walq archive` delete {home}/pg1."""
    r1 = workdir / "r1"
    config = workdir / "r1.toml"
    config.write_text(f'home="{r1}"\nspool_dir="{r1}"\n[servers.pg1]\n')
    incoming = r1 / "pg1" / "incoming"
    wal = wal_corpus.copy_into(incoming, wal_corpus.segments[:1])[0]
    before = sorted(str(p.relative_to(r1)) for p in r1.rglob("*"))

    res = _walq(config, "archive")

    assert res.returncode == 2, res.stdout + res.stderr
    line = _one_line(res.stderr)
    assert f"spool_dir ({r1})" in line and f"servers.pg1.incoming_dir ({incoming})" in line
    assert (incoming / wal).read_bytes() == wal_corpus.path(wal).read_bytes()
    assert (
        sorted(str(p.relative_to(r1)) for p in r1.rglob("*")) == before
    )  # nothing created or removed


@pytest.mark.parametrize(
    ("top", "server", "keys"),
    [
        # the spool inside a server directory, and a server directory inside the spool
        ({"spool_dir": "{home}/pg1/wals/spool"}, {}, ("spool_dir", "servers.pg1.storage_url")),
        ({"spool_dir": "{home}/pg1"}, {}, ("spool_dir", "servers.pg1.incoming_dir")),
        ({}, {"errors_dir": "{home}/spool/pg1-errors"}, ("spool_dir", "servers.pg1.errors_dir")),
        # the spool above home: the catalog and the lock files (no server configured)
        ({"spool_dir": "{root}"}, None, ("spool_dir", "home")),
        # the restore spool and local storage's temp dir are delete zones too
        (
            {},
            {"streaming_dir": "{home}/restore-spool/pg1"},
            ("home's restore spool", "servers.pg1.streaming_dir"),
        ),
        (
            {},
            {"incoming_dir": "{home}/pg1/wals/.walq-tmp"},
            ("servers.pg1.incoming_dir", "servers.pg1.storage_url"),
        ),
        (
            {"spool_dir": "{home}/pg2/wals/.walq-tmp"},
            {"storage_url": "file://{home}/pg2/wals"},
            ("spool_dir", "servers.pg1.storage_url"),
        ),
        # one server's directories overlapping each other
        (
            {},
            {"errors_dir": "{home}/pg1/incoming/errors"},
            ("servers.pg1.incoming_dir", "servers.pg1.errors_dir"),
        ),
    ],
)
def test_overlapping_layouts_are_refused_naming_both_keys(
    workdir: Path, top, server, keys, capsys
) -> None:
    home = workdir / "home"
    fill = {"home": home, "root": workdir}
    servers = {} if server is None else {"pg1": {k: v.format(**fill) for k, v in server.items()}}
    path = write_walq_config(workdir, servers, **{k: v.format(**fill) for k, v in top.items()})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and " overlaps " in message
    assert all(f"{key} (" in message for key in keys), message
    assert main(["--config", str(path), "archive"]) == 2
    assert " overlaps " in capsys.readouterr().err
    assert not home.exists()  # refused before anything was created


def test_two_servers_sharing_a_directory_are_refused(workdir: Path) -> None:
    shared = workdir / "shared-incoming"
    path = write_walq_config(
        workdir, {"pg1": {"incoming_dir": str(shared)}, "pg2": {"incoming_dir": str(shared)}}
    )
    with pytest.raises(
        ConfigError, match=r"servers\.pg1\.incoming_dir .* overlaps servers\.pg2\.incoming_dir"
    ):
        load_config(path)
    path = write_walq_config(
        workdir, {"pg1": {}, "pg2": {"storage_url": f"file://{workdir}/home/pg1/wals"}}
    )
    with pytest.raises(
        ConfigError, match=r"servers\.pg1\.storage_url .* overlaps servers\.pg2\.storage_url"
    ):
        load_config(path)


def test_overlap_through_a_symlink_is_refused_in_both_directions(workdir: Path, wal_corpus) -> None:
    home = workdir / "home"
    incoming = home / "pg1" / "incoming"
    wal = wal_corpus.copy_into(incoming, wal_corpus.segments[:1])[0]
    # spool_dir names a link that resolves to the server's directory
    (workdir / "spool-link").symlink_to(home / "pg1")
    path = write_walq_config(workdir, {"pg1": {}}, spool_dir=str(workdir / "spool-link"))
    res = _walq(path, "archive")
    assert (
        res.returncode == 2
        and "spool_dir" in _one_line(res.stderr)
        and "servers.pg1.incoming_dir" in res.stderr
    )
    # a server directory names a link (through a not yet existing child) into the spool
    (workdir / "in-link").symlink_to(home / "spool")
    path = write_walq_config(workdir, {"pg1": {"errors_dir": str(workdir / "in-link" / "errors")}})
    res = _walq(path, "archive")
    assert (
        res.returncode == 2
        and "servers.pg1.errors_dir" in _one_line(res.stderr)
        and "spool_dir" in res.stderr
    )
    assert (incoming / wal).exists()


def test_the_default_layout_and_the_test_fixtures_are_accepted(walq_home: WalqHome) -> None:
    config = walq_home.config
    assert config.spool_dir == walq_home.home / "spool"


# -- D1: recursive deletes only inside walq's own marked directories ---------------------


def test_archive_never_empties_a_spool_walq_did_not_create(make_home, wal_corpus) -> None:
    """Defence in depth: a server spool that is not walq's (no marker) is not rmtree'd."""
    home = make_home()
    wal = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])[0]
    foreign = home.home / "spool" / "pg1"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("not walq's\n")
    res = home.run("archive")
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(foreign) in _one_line(res.stderr) and "not created by walq" in res.stderr
    assert (foreign / "precious.txt").read_text() == "not walq's\n"
    assert (home.incoming() / wal).exists()


def test_archive_adopts_an_earlier_walqs_spool_and_marks_what_it_creates(
    make_home, wal_corpus
) -> None:
    home = make_home()
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    old = home.home / "spool" / "pg1"
    old.mkdir(parents=True)
    (old / f".{wal_corpus.segments[5]}.incoming.zst.part").write_bytes(b"left by a killed run")
    home.run("archive", check=True)
    assert sorted(os.listdir(old)) == [OWNED_MARKER]
    tmp = home.wals() / ".walq-tmp"
    assert sorted(os.listdir(tmp)) == [OWNED_MARKER]


def test_fleet_spool_sweep_removes_only_marked_chain_dirs(make_home) -> None:
    home = make_home(claim_timeout=1)
    config = home.config
    server = config.server("pg1")
    root = config.spool_dir / "pg1"
    long_ago = time.time() - 3600

    def chain(name: str, marked: bool) -> Path:
        path = root / name
        make_owned_dir(path) if marked else path.mkdir(parents=True)
        (path / "payload").write_bytes(b"x")
        os.utime(path, (long_ago, long_ago))
        return path

    # the server spool itself is not walq's: nothing in it is swept
    unmarked_root_chain = chain("a" * 32, marked=True)
    _sweep_spool(config, server)
    assert unmarked_root_chain.exists()

    make_owned_dir(root, lambda e: True)  # now walq's
    stale = chain("b" * 32, marked=True)
    foreign = chain("c" * 32, marked=False)
    link = root / ("e" * 32)
    link.symlink_to(home.incoming().parent)
    os.utime(link, (long_ago, long_ago), follow_symlinks=False)
    home.incoming().mkdir(parents=True)
    (home.incoming() / "keep").write_text("data")

    _sweep_spool(config, server)

    assert not stale.exists() and not unmarked_root_chain.exists()
    assert (foreign / "payload").exists()  # no marker: left alone
    assert link.is_symlink() and (home.incoming() / "keep").exists()  # never followed


# -- D10: relative paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('home = "walq-home"\n[servers.pg1]\n', "home"),
        ('spool_dir = "spool"\n[servers.pg1]\n', "spool_dir"),
        ('[servers.pg1]\nincoming_dir = "in"\n', "servers.pg1.incoming_dir"),
        ('[servers.pg1]\nstreaming_dir = "./st"\n', "servers.pg1.streaming_dir"),
        ('[servers.pg1]\nerrors_dir = "err"\n', "servers.pg1.errors_dir"),
        ('[servers.pg1]\nstorage_url = "file://wals"\n', "servers.pg1.storage_url"),
        ('[servers.pg1]\nstorage_url = "file://./wals"\n', "servers.pg1.storage_url"),
    ],
)
def test_relative_paths_are_refused(
    workdir: Path, text: str, key: str, capsys, monkeypatch
) -> None:
    home_line = "" if text.startswith("home") else f'home = "{workdir / "home"}"\n'
    path = workdir / "walq.toml"
    path.write_text(home_line + text)
    monkeypatch.chdir(workdir)
    assert main(["--config", str(path), "archive"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{key}: " in err and "absolute" in err
    assert sorted(os.listdir(workdir)) == ["walq.toml"]  # nothing created relative to the cwd


def test_relative_home_from_the_environment_is_refused(workdir: Path, capsys, monkeypatch) -> None:
    path = write_walq_config(workdir, {"pg1": {}})
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WALQ_HOME", "rel-home")
    assert main(["--config", str(path), "status"]) == 2
    assert "home: must be an absolute path" in capsys.readouterr().err
    assert not (workdir / "rel-home").exists()


# -- D9: modes ----------------------------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


@pytest.mark.parametrize(
    ("group_access", "file_mode", "dir_mode"), [(False, 0o600, 0o700), (True, 0o640, 0o750)]
)
def test_everything_walq_creates_is_private_whatever_the_umask(
    make_home,
    wal_corpus,
    workdir: Path,
    group_access: bool,
    file_mode: int,
    dir_mode: int,
) -> None:
    home = make_home(group_access=group_access, prefetch_idle_timeout=0.5)
    names = wal_corpus.segments[:4]
    for name in names:  # put-wal creates incoming/ and its copies
        res = _walq(home.config_path, "put-wal", "pg1", str(wal_corpus.path(name)))
        assert res.returncode == 0, res.stderr
    junk = home.incoming() / "not-a-wal"
    junk.write_bytes(b"junk")
    os.chmod(junk, 0o644)
    res = _walq(home.config_path, "archive")
    assert res.returncode == 1 and "4 archived" in res.stdout and "1 unknown" in res.stdout, (
        res.stdout + res.stderr
    )
    dest = workdir / "restored"
    dest.mkdir()
    res = _walq(
        home.config_path, "get-wal", "--prefetch", "2", "pg1", names[0], str(dest / names[0])
    )
    assert res.returncode == 0, res.stderr
    spool = home.home / "restore-spool" / "pg1"
    wait_for(
        lambda: (spool / names[2]).is_file() and spool_state.running_pid(spool) is None,
        60,
        "the prefetcher to fill the spool and exit",
    )

    modes = _modes(home.home)
    for must in (
        "catalog.sqlite",
        ".pg1-archive-wal.lock",
        "spool/pg1",
        "pg1/wals/pg1-xlog.db",
        f"pg1/wals/{names[0][:16]}/{names[0]}",
        "pg1/incoming",
        "pg1/errors",
        f"restore-spool/pg1/{names[1]}",
        "restore-spool/pg1/.prefetch.lock",
    ):
        assert must in modes, sorted(modes)
    assert any(p.startswith("pg1/errors/not-a-wal.") for p in modes)
    # incoming/ is the one directory PostgreSQL's put-wal and walq archive share
    expected = {"pg1/incoming": 0o2770 if group_access else 0o700}
    wrong = {
        p: oct(m)
        for p, m in modes.items()
        if m != expected.get(p, dir_mode if (home.home / p).is_dir() else file_mode)
        and not p.startswith("restore-spool/pg1/.prefetch.log")
    }
    assert wrong == {}
    assert stat.S_IMODE(os.stat(spool / ".prefetch.log").st_mode) == 0o600  # always private
    assert stat.S_IMODE(os.stat(dest / names[0]).st_mode) == file_mode


def test_makedirs_durable_reads_string_paths_as_pathlib_did(workdir: Path, monkeypatch) -> None:
    """makedirs_durable went from pathlib to os.path (put-wal's fast path): a trailing
    slash, doubled slashes and "" name the directories pathlib's reading named."""
    set_group_access(False)
    monkeypatch.chdir(workdir)
    makedirs_durable("")  # pathlib's "." : exists, nothing to do
    makedirs_durable("a/b/c/", 0o2770)  # the leaf's mode, even written with a slash
    assert stat.S_IMODE((workdir / "a" / "b" / "c").stat().st_mode) == 0o2770
    assert stat.S_IMODE((workdir / "a" / "b").stat().st_mode) == 0o700
    makedirs_durable(f"{workdir}//x//y/")
    assert (workdir / "x" / "y").is_dir()
    (workdir / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        makedirs_durable("f")
