"""put-wal's fast path (walq.archive.putwal_fast) and the scan it shares with get-wal.

- archive_command's process imports no pydantic, pydantic-settings, tomllib,
  argparse, boto3, botocore or psycopg, and never the config model or full CLI.
- The fast path and the full CLI give the same results, case by case: exit code,
  stderr, what lands in incoming/ (names, bytes, modes).
- Whatever the fast path cannot decide (unusual config, WALQ_* variables, a
  segment without a usable header) goes to the full CLI.
- The shared TOML scan agrees with tomllib or abstains (property test).
- Both per-WAL fast paths (put-wal, get-wal's spool hit) import none of the standard
  library modules that made put-wal cost 2.6x its floor (pathlib, re, enum, ...).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.config_file import write_walq_config
from walq.archive.putwal_fast import put_wal_fast
from walq.config_scan import scan_toml

PYTHON = sys.executable
HEAVY = (
    "pydantic",
    "pydantic_settings",
    "tomllib",
    "argparse",
    "boto3",
    "botocore",
    "psycopg",
    "walq.config",
    "walq.cli",
    "blake3",
)
PROBE = """
import sys
sys.argv = ["walq", *sys.argv[1:]]
from walq.main import main
rc = main()
heavy = sorted(m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r})
print(repr(heavy))
sys.exit(rc)
"""
# What put-wal's fast path cost on top of the interpreter (issue 16, python -X importtime):
# pathlib with fnmatch and re, walq.wal's dataclasses/inspect/enum/re, typing, shutil;
# hashlib and walq.chunks for an identical repeat. Neither fast path may import any.
STDLIB_WEIGHT = (
    "pathlib",
    "re",
    "fnmatch",
    "dataclasses",
    "enum",
    "inspect",
    "typing",
    "shutil",
    "struct",
    "collections",
    "functools",
    "contextlib",
    "hashlib",
    "tomllib",
    "pydantic",
    "walq.wal",
    "walq.chunks",
)
FULL = """
import sys
from walq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_walq(config: Path, *args: str, full: bool = False, env: dict[str, str] | None = None):
    """The console script's entry (fast path first), or the full CLI alone."""
    code = FULL if full else PROBE.format(heavy=HEAVY)
    return subprocess.run(
        [PYTHON, "-c", code, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def landed(incoming: Path) -> dict[str, tuple[bytes, int]]:
    if not incoming.exists():
        return {}
    out = {"<dir>": (b"", stat.S_IMODE(incoming.stat().st_mode))}
    for p in incoming.iterdir():
        out[p.name] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def test_put_wal_imports_nothing_heavy(workdir: Path, wal_corpus) -> None:
    config = write_walq_config(
        workdir,
        {"pg1": {"compression": "lz4", "checksum": "blake3"}},
        broker_url=None,
        checksum="sha256",  # keys the fast path does not read: no reason to fall back
    )
    seg = wal_corpus.path(wal_corpus.segments[0])
    res = run_walq(config, "put-wal", "pg1", str(seg))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout  # not one heavy module
    target = workdir / "home" / "pg1" / "incoming" / seg.name
    assert target.read_bytes() == seg.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == [seg.name]  # no dot-file left
    again = run_walq(config, "put-wal", "pg1", str(seg))  # identical: success, still light
    assert again.returncode == 0 and again.stdout.strip() == "[]", again.stdout + again.stderr


def _weight(config: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The STDLIB_WEIGHT modules a whole ``walq`` call (console script's entry) imported."""
    probe = PROBE.format(heavy=STDLIB_WEIGHT)
    res = subprocess.run(
        [PYTHON, "-c", probe, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    return eval(res.stdout.strip())  # the probe prints a sorted list of names


def test_fast_paths_import_none_of_the_stdlib_weight(workdir: Path, wal_corpus) -> None:
    config = write_walq_config(workdir, {"pg1": {}}, broker_url=None)
    seg = wal_corpus.path(wal_corpus.segments[2])
    incoming = workdir / "home" / "pg1" / "incoming"
    assert _weight(config, "put-wal", "pg1", str(seg)) == []  # stored
    assert (incoming / seg.name).read_bytes() == seg.read_bytes()
    assert _weight(config, "put-wal", "pg1", str(seg)) == []  # identical repeat
    spool = workdir / "home" / "restore-spool" / "pg1"
    spool.mkdir(parents=True)
    shutil.copy(seg, spool / seg.name)
    dest = workdir / "restored"
    assert _weight(config, "get-wal", "pg1", seg.name, str(dest)) == []  # spool hit
    assert dest.read_bytes() == seg.read_bytes() and not (spool / seg.name).exists()
    # the probe sees them where they are imported: the same call sent to the full CLI
    full = _weight(
        config, "put-wal", "pg1", str(seg), env=dict(os.environ, WALQ_GROUP_ACCESS="false")
    )
    assert {"pathlib", "re", "typing", "pydantic"} <= set(full), full


def _cases(workdir: Path, wal_corpus) -> list[tuple[str, dict, dict, list[str], Path | None]]:
    """(label, servers, top-level keys, put-wal args, a file already in incoming/)."""
    seg = wal_corpus.path(wal_corpus.segments[1])
    other = workdir / "other" / seg.name
    other.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(seg.read_bytes())
    data[-100] ^= 0xFF
    other.write_bytes(bytes(data))
    short = workdir / "short" / seg.name
    short.parent.mkdir(parents=True, exist_ok=True)
    short.write_bytes(seg.read_bytes()[: 1 << 19])
    headerless = workdir / "headerless" / seg.name
    headerless.parent.mkdir(parents=True, exist_ok=True)
    headerless.write_bytes(b"\0" * (1 << 20))
    badname = workdir / "bad" / "00000001000000000000000G"
    badname.parent.mkdir(parents=True, exist_ok=True)
    badname.write_bytes(seg.read_bytes())
    custom = str(workdir / "custom-in")
    pg1: dict = {"pg1": {}}
    return [
        ("stored", pg1, {}, ["pg1", str(seg)], None),
        ("group_access", pg1, {"group_access": True}, ["pg1", str(seg)], None),
        ("incoming_dir", {"pg1": {"incoming_dir": custom}}, {}, ["pg1", str(seg)], None),
        ("identical", pg1, {}, ["pg1", str(seg)], seg),
        ("different", pg1, {}, ["pg1", str(seg)], other),
        ("short", pg1, {}, ["pg1", str(short)], None),
        ("headerless", pg1, {}, ["pg1", str(headerless)], None),
        ("bad name", pg1, {}, ["pg1", str(badname)], None),
        ("unknown server", pg1, {}, ["pg2", str(seg)], None),
        ("missing file", pg1, {}, ["pg1", str(workdir / "nope" / seg.name)], None),
        ("relative incoming", {"pg1": {"incoming_dir": "rel/in"}}, {}, ["pg1", str(seg)], None),
    ]


def test_fast_path_and_full_cli_agree(workdir: Path, wal_corpus) -> None:
    for label, servers, top, args, present in _cases(workdir, wal_corpus):
        results = []
        for full in (False, True):
            root = workdir / f"{label.replace(' ', '-')}-{full}"
            root.mkdir()
            config = write_walq_config(root, servers, **top)
            incoming = Path(
                servers["pg1"].get("incoming_dir") or root / "home" / "pg1" / "incoming"
            )
            if not incoming.is_absolute():
                incoming = root / "none"
            shutil.rmtree(incoming, ignore_errors=True)
            if present is not None:
                incoming.mkdir(parents=True, mode=0o700)
                shutil.copy(present, incoming / Path(args[1]).name)
                os.chmod(incoming / Path(args[1]).name, 0o600)
            res = run_walq(config, "put-wal", *args, full=full)
            stderr = res.stderr.replace(str(root), "ROOT")
            results.append((res.returncode, stderr, landed(incoming)))
        assert results[0] == results[1], label


@pytest.mark.parametrize(
    "config_text",
    [
        'servers.pg1.incoming_dir = "/elsewhere"\nhome = "H"\n[servers.pg1]\n',  # dotted key
        'home = "H"\n[servers]\npg1 = { incoming_dir = "/elsewhere" }\n',  # inline table
        'home = "H"\n[servers."pg1"]\n',  # quoted header
        'home = "H"\ngroup_access = "yes"\n[servers.pg1]\n',  # not a boolean
        'home = """H"""\n[servers.pg1]\n',  # multi-line string
        'home = "H"\n[servers.pg2]\n',  # no such server
        'home = "relative"\n[servers.pg1]\n',
    ],
)
def test_unusual_config_goes_to_the_full_cli(workdir: Path, wal_corpus, config_text: str) -> None:
    config = workdir / "walq.toml"
    config.write_text(config_text.replace("H", str(workdir / "home")))
    seg = str(wal_corpus.path(wal_corpus.segments[0]))
    assert put_wal_fast(["--config", str(config), "put-wal", "pg1", seg]) is None
    assert not (workdir / "home").exists()  # abstaining touched nothing


def test_walq_env_and_odd_arguments_go_to_the_full_cli(
    workdir: Path, wal_corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_walq_config(workdir, {"pg1": {}})
    seg = str(wal_corpus.path(wal_corpus.segments[0]))
    empty = workdir / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for argv in (
        ["put-wal", "pg1", seg],  # no --config and no ./walq.toml here
        ["--config", str(config), "put-wal", "pg1", seg, "extra"],
        ["--config", str(config), "put-wal", "--help"],
        ["--config", str(config), "put-wal", "../pg1", seg],
    ):
        assert put_wal_fast(argv) is None, argv
    for var in ("WALQ_GROUP_ACCESS", "walq_home", "WALQ_SERVERS__PG1__INCOMING_DIR"):
        monkeypatch.setenv(var, "/x")  # pydantic-settings would read it
        assert put_wal_fast(["--config", str(config), "put-wal", "pg1", seg]) is None, var
        monkeypatch.delenv(var)
    monkeypatch.setenv("WALQ_BENCH_CACHE", "/x")  # names no key put-wal reads
    assert not (workdir / "home" / "pg1" / "incoming").exists()
    assert put_wal_fast(["--config", str(config), "put-wal", "pg1", seg]) == 0
    assert (workdir / "home" / "pg1" / "incoming" / Path(seg).name).exists()


WANTED = frozenset({("", "home"), ("", "group_access"), ("servers.pg1", "incoming_dir")})


@given(
    st.lists(
        st.sampled_from(
            [
                'home = "/h1"',
                "home = '/h2'",
                "group_access = true",
                "group_access = false # c",
                'group_access = "true"',
                "[servers.pg1]",
                "[servers.pg2]",
                "[servers]",
                'incoming_dir = "/in"',
                "incoming_dir = '/in2'",
                'pg1 = { incoming_dir = "/x" }',
                'servers.pg1.incoming_dir = "/y"',
                "n = 3",
                "arr = [",
                "1,",
                "]",
                'm = """',
                '"""',
                '"home" = "/q"',
                "# c",
                "",
                "t = {a = 1}",
            ]
        ),
        max_size=12,
    )
)
def test_the_shared_scan_agrees_with_tomllib_or_abstains(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # a broken file: the full CLI reports it
    got = scan_toml(text, WANTED)
    if got is None:
        return
    values, _ = got
    pg1 = doc.get("servers", {}).get("pg1", {})
    expected = {
        ("", "home"): doc.get("home"),
        ("", "group_access"): doc.get("group_access"),
        ("servers.pg1", "incoming_dir"): pg1.get("incoming_dir") if isinstance(pg1, dict) else None,
    }
    assert {k: values.get(k) for k in WANTED} == expected
