"""A name that ends in a newline is no WAL name and no server name (issue 10, D6).

``re.match`` with a pattern ending in ``$`` accepts a trailing ``\\n``: a WAL moved
to ``X\\n`` in incoming/ was archived under that name, split its xlogdb line in
two, and left get-wal X saying "not in the archive". Every validator must refuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.services.homes import WalqHome
from walq.archive.job import _wal_name
from walq.catalog import open_catalog
from walq.config import ServerConfig, check_server_name
from walq.config_scan import is_server_name
from walq.errors import ConfigError
from walq.restore.spool_hit import _is_segment_name
from walq.storage.local import LocalStorage
from walq.storage.s3 import S3Storage
from walq.wal import WalNameError, is_wal_name, parse_wal_name, segment_name

VALID = [
    "000000010000000000000003",
    "00000001000000000000001F.partial",
    "00000001000000000000000A.00000028.backup",
    "00000002.history",
]
TAILS = ["\n", "\r\n", "\n\n"]


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("name", VALID)
def test_every_wal_name_validator_rejects_a_trailing_newline(name: str, tail: str) -> None:
    assert is_wal_name(name)
    bad = name + tail
    with pytest.raises(WalNameError):
        parse_wal_name(bad)
    assert not is_wal_name(bad)
    with pytest.raises(ValueError):
        _wal_name(bad)  # the fleet's task-argument validator
    assert S3Storage._object(object(), f"walq/pg1/wals/{bad}.zst", 10) is None  # type: ignore[arg-type]
    if len(name) == 24:
        assert _is_segment_name(name) and not _is_segment_name(bad)


@given(tli=st.integers(1, 0xFFFFFFFF), segno=st.integers(0, 0xFFFFFF), tail=st.sampled_from(TAILS))
def test_no_segment_name_with_a_newline_is_accepted(tli: int, segno: int, tail: str) -> None:
    name = segment_name(tli, segno, 1 << 20)
    assert is_wal_name(name) and not is_wal_name(name + tail)


@pytest.mark.parametrize("tail", TAILS)
def test_server_and_slot_names_reject_a_trailing_newline(tail: str) -> None:
    check_server_name("pg1")
    with pytest.raises(ConfigError):
        check_server_name("pg1" + tail)
    assert is_server_name("pg1") and not is_server_name("pg1" + tail)
    with pytest.raises(ValidationError):
        ServerConfig(slot_name="walq_pg1" + tail)


def test_local_listing_ignores_names_with_a_newline(tmp_path: Path) -> None:
    good = "000000010000000000000003"
    hashed = tmp_path / "0000000100000000"
    hashed.mkdir()
    (hashed / good).write_bytes(b"x")
    (hashed / (good + "\n")).write_bytes(b"x")
    (tmp_path / "0000000100000000\n").mkdir()
    (tmp_path / "0000000100000000\n" / good).write_bytes(b"x")
    (tmp_path / "00000002.history\n").write_bytes(b"x")
    listed = [(o.name, o.key) for o in LocalStorage(tmp_path, "pg1").list()]
    assert listed == [(good, f"0000000100000000/{good}")]


def test_wal_renamed_with_a_newline_is_parked_never_archived(
    walq_home: WalqHome, wal_corpus, workdir: Path
) -> None:
    """The reproduction: mv incoming/X incoming/X$'\\n'; walq archive."""
    first, x = wal_corpus.segments[0], wal_corpus.segments[1]
    wal_corpus.copy_into(walq_home.incoming(), [first, x])
    os.rename(walq_home.incoming() / x, walq_home.incoming() / (x + "\n"))
    res = walq_home.run("archive")
    assert res.returncode == 1, res.stdout + res.stderr  # an unknown file makes the run not OK
    assert "1 archived" in res.stdout and "1 unknown" in res.stdout
    assert repr(x + "\n")[1:-1] in res.stderr  # named, quoted, on one line
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert os.listdir(walq_home.incoming()) == []
    parked = os.listdir(walq_home.errors())
    assert len(parked) == 1 and parked[0].startswith(x + "\n") and parked[0].endswith(".unknown")
    catalog = open_catalog(walq_home.config)
    try:
        assert catalog.archived_names("pg1") == [first]
        assert all("\n" not in r.name for r in catalog.records("pg1"))
    finally:
        catalog.close()
    lines = (walq_home.wals() / "pg1-xlog.db").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [first]
    assert all(len(line.split("\t")) == 5 for line in lines)
    assert not (walq_home.wals() / x[:16] / (x + "\n")).exists()
    # X itself was never archived, so get-wal says so honestly (exit 1), and verify is clean
    missing = walq_home.run("get-wal", "pg1", x, str(workdir / "x"))
    assert missing.returncode == 1 and "not in the archive" in missing.stderr
    assert walq_home.run("verify", "pg1").returncode == 0
