"""The restore spool and its fast path: a prefetched WAL is served without the full CLI."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.homes import WalqHome, spooled
from tests.services.pg import wait_for
from walq.restore import spool as spool_state
from walq.restore.spool_hit import DEFAULT_HOME, simple_toml_home


def test_prefetched_wal_is_served_from_the_spool(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:6])
    walq_home.run("archive", check=True)
    spool = walq_home.home / "restore-spool" / "pg1"
    walq_home.run(
        "get-wal", "pg1", names[0], str(walq_home.root / "first"), "--prefetch", "3", check=True
    )
    wait_for(
        lambda: spooled(spool) == names[1:4], 30, "the prefetcher to restore the next 3 segments"
    )
    for name in names[1:]:
        dest = walq_home.root / f"out-{name}"
        walq_home.run("get-wal", "pg1", name, str(dest), "--prefetch", "3", check=True)
        assert dest.read_bytes() == wal_corpus.path(name).read_bytes()
    # it stops at the end of the archive, says so, and leaves nothing behind
    wait_for(
        lambda: spool_state.running_pid(spool) is None,
        30,
        "the prefetcher to exit at the archive's end",
    )
    assert (spool / spool_state.END_NAME).read_text().split()[0] > names[-1]
    assert spooled(spool) == []
    assert not list(spool.glob(".*.walq-*"))
    # the spool hit must not import pydantic (the heavy part of start-up)
    probe = (
        "import sys; from walq.restore.spool_hit import spool_hit; "
        f"r = spool_hit(['--config', '{walq_home.config_path}', 'get-wal', 'pg1', '{names[5]}', '/dev/null']); "
        "print(r, 'pydantic' in sys.modules or 'blake3' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "None",
        "False",
    ]  # names[5] is not in the spool: falls through, still no pydantic (nor blake3)


def test_spool_miss_falls_back_to_the_archive(walq_home: WalqHome, wal_corpus) -> None:
    names = wal_corpus.copy_into(walq_home.incoming(), wal_corpus.segments[:2])
    walq_home.run("archive", check=True)
    dest = walq_home.root / "x"
    walq_home.run("get-wal", "pg1", names[1], str(dest), check=True)
    assert dest.read_bytes() == wal_corpus.path(names[1]).read_bytes()
    assert not (
        walq_home.home / "restore-spool" / "pg1" / spool_state.LOCK_NAME
    ).exists()  # no --prefetch: no prefetcher


HOME_CASES = [
    'home = "/srv/walq"\n',
    "home = '/srv/walq' # literal\n",
    '# comment\nbroker_url = "redis://x"\nhome="/a b/c"\n[servers.pg1]\nhome = "/not/this"\n',
    '[servers.pg1]\ncompression = "lz4"\n',  # no home: the default
    'scan_interval = 5\nlist = [1, 2]\nhome = "/x"\n',
    'x = [\n  [1],\n]\nhome = "/hidden"\n',  # multi-line array: tomllib decides
    '"home" = "/quoted"\n',
    "home.x = 1\n",
    'home = "/esc\\\\aped"\n',
    'a = """\nhome = "/in-a-string"\n"""\nhome = "/real"\n',
    'home = "/x" junk\n',
    'homedir = "/y"\nhome = "/x"\n',
]


@pytest.mark.parametrize("text", HOME_CASES)
def test_the_fast_home_scan_agrees_with_tomllib_or_abstains(text: str) -> None:
    got = simple_toml_home(text)
    if got is None:
        return  # abstained: the fast path asks tomllib
    try:
        expected = tomllib.loads(text).get("home", DEFAULT_HOME)
    except tomllib.TOMLDecodeError:
        pytest.fail(f"answered {got!r} for invalid TOML")
    assert got == expected


@given(
    st.lists(
        st.sampled_from(
            [
                'home = "/h1"',
                "home = '/h2'",
                'other = "v"',
                "n = 3",
                "[servers.pg1]",
                'home = "/h3" # c',
                "# c",
                "arr = [",
                "1,",
                "]",
                'm = """',
                "text",
                '"""',
                '"home" = "/q"',
                "",
                'home = "/a\\\\b"',
                "t = {a = 1}",
            ]
        ),
        max_size=12,
    )
)
def test_the_fast_home_scan_never_disagrees(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    try:
        expected = tomllib.loads(text).get("home", DEFAULT_HOME)
    except tomllib.TOMLDecodeError:
        return  # the full CLI reports a broken file; the fast path may try its luck, then falls through
    got = simple_toml_home(text)
    assert got is None or got == expected
