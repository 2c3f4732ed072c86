"""Scan classifies incoming/ and streaming/ exactly as Barman does."""

from __future__ import annotations

import os
from pathlib import Path

from tests.services.config_file import write_walq_config
from walq.archive.scan import scan
from walq.config import load_config


def _server(root: Path, **settings):
    (root / "home").mkdir(exist_ok=True)
    cfg = load_config(write_walq_config(root, {"pg1": settings}))
    s = cfg.server("pg1")
    for d in (s.incoming_dir, s.streaming_dir):
        d.mkdir(parents=True, exist_ok=True)
    return s


def _touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_bytes(b"x")


def test_incoming_rules(tmp_path: Path) -> None:
    s = _server(tmp_path)
    _touch(
        s.incoming_dir,
        "000000010000000000000002",
        "000000010000000000000001",
        "00000002.history",
        "000000010000000000000003.tmp",
        ".000000010000000000000004.123.put",
        "junk.txt",
    )
    (s.incoming_dir / "000000010000000000000005").mkdir()
    target = tmp_path / "outside"
    target.write_bytes(b"secret")
    os.symlink(target, s.incoming_dir / "000000010000000000000006")
    batch = scan(s)
    assert [c.name for c in batch.wals] == [
        "000000010000000000000001",
        "000000010000000000000002",
        "00000002.history",
    ]
    assert "000000010000000000000003.tmp" in batch.skipped
    moved = sorted(p.name.split(".")[0] for p in batch.unknown)
    assert moved == ["000000010000000000000005", "000000010000000000000006", "junk"]
    assert all(p.name.endswith(".unknown") for p in batch.unknown)
    assert target.read_bytes() == b"secret"  # the link was moved, never followed
    assert (s.incoming_dir / ".000000010000000000000004.123.put").exists()
    assert (s.incoming_dir / "000000010000000000000003.tmp").exists()


def test_streaming_keeps_newest_partial_and_archives_older_partials(tmp_path: Path) -> None:
    s = _server(tmp_path)
    _touch(
        s.streaming_dir,
        "000000010000000000000001",
        "00000001000000000000001F.partial",
        "00000002000000000000001F",
        "000000020000000000000020.partial",
        "00000002.history",
    )
    batch = scan(s)
    names = [c.name for c in batch.wals]
    assert "000000020000000000000020.partial" not in names
    assert "00000001000000000000001F.partial" in names and "00000002.history" in names
    assert batch.skipped == ["000000020000000000000020.partial"]


def test_streaming_without_partial_holds_newest_segment(tmp_path: Path) -> None:
    s = _server(tmp_path)
    _touch(s.streaming_dir, "000000010000000000000001", "000000010000000000000002")
    assert [c.name for c in scan(s).wals] == ["000000010000000000000001"]


def test_streaming_copy_comes_first_and_batch_cuts_before_filtering(tmp_path: Path) -> None:
    s = _server(tmp_path, batch_size=2)
    _touch(
        s.streaming_dir,
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    )
    _touch(
        s.incoming_dir,
        "000000010000000000000001",
        "000000010000000000000000.tmp",
        "000000010000000000000009",
    )
    batch = scan(s)
    assert [(c.name, c.origin) for c in batch.wals] == [
        ("000000010000000000000001", "streaming"),
        ("000000010000000000000001", "incoming"),
    ]
    assert batch.total == 6
