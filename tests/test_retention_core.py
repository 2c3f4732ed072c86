"""Retention core: parsers, lineage and plans, on made-up inputs and on a real cluster.

The real-cluster tests archive with plain ``cp`` into a directory (no walq in the
path): three pg_basebackups with pgbench between them, then a promotion to timeline
2 and a fourth backup there, and check the plans against the real .backup and
.history files PostgreSQL wrote.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.services.barman import barman_of
from tests.services.pg import Cluster, as_postgres, chown_postgres, wait_for
from tests.services.scratch import fresh_dir
from walq.retention.backups import (
    BackupInfo,
    BackupParseError,
    known_backups,
    parse_backup_history,
    parse_barman_info,
    pg_time,
    read_barman_backup_infos,
)
from walq.retention.policy import (
    RecoveryWindow,
    Redundancy,
    lineage_order,
    parse_retention_policy,
    plan_delete_before,
    plan_expiry,
)
from walq.retention.timelines import Lineage, LineageError
from walq.wal import is_wal_name, lsn_to_segment, parse_lsn, segment_name

SEG = 1 << 20
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


# --- helpers: made-up archives ------------------------------------------------------------


def seg(tli: int, n: int) -> str:
    return segment_name(tli, n, SEG)


def lsn(n: int, offset: int = 0x28) -> int:
    return n * SEG + offset


def backup_file(
    tli: int,
    start: int,
    stop: int,
    label: str = "b",
    *,
    stop_tli: int | None = None,
    start_time: str = "2026-11-30 06:00:00 UTC",
    stop_time: str = "2026-11-30 06:00:05 UTC",
) -> tuple[str, bytes]:
    """A .backup history file as PostgreSQL 15 writes it (LSNs at offset 0x28 of segments)."""
    stop_tli = stop_tli or tli
    s, e = lsn(start), lsn(stop, 0x100)
    text = (
        f"START WAL LOCATION: {s >> 32:X}/{s & 0xFFFFFFFF:X} (file {seg(tli, start)})\n"
        f"STOP WAL LOCATION: {e >> 32:X}/{e & 0xFFFFFFFF:X} (file {seg(stop_tli, stop)})\n"
        f"CHECKPOINT LOCATION: {s >> 32:X}/{(s + 0x60) & 0xFFFFFFFF:X}\n"
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\n"
        f"START TIME: {start_time}\nLABEL: {label}\nSTART TIMELINE: {tli}\n"
        f"STOP TIME: {stop_time}\nSTOP TIMELINE: {stop_tli}\n"
    )
    return f"{seg(tli, start)}.{s % SEG:08X}.backup", text.encode()


def info(
    name: str,
    tli: int,
    start: int,
    stop: int,
    stop_time: datetime | None = None,
    *,
    complete: bool = True,
    source: str = "walq",
    status: str | None = None,
    label: str = "b",
) -> BackupInfo:
    return BackupInfo(
        name=name,
        source=source,
        label=label,
        timeline=tli,
        start_wal=seg(tli, start),  # type: ignore[arg-type]
        start_lsn=lsn(start),
        stop_wal=seg(tli, stop),
        stop_lsn=lsn(stop, 0x100),
        start_time=stop_time,
        stop_time=stop_time,
        complete=complete,
        barman_status=status,
    )


def history(*lines: tuple[int, int]) -> bytes:
    return "".join(
        f"{p}\t{x >> 32:X}/{x & 0xFFFFFFFF:X}\tno recovery target specified\n" for p, x in lines
    ).encode()


BARMAN_INFO = """backup_label='START WAL LOCATION: 0/500028 (file 000000010000000000000005)\\nCHECKPOINT LOCATION: 0/500060\\nBACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: 2026-11-29 10:00:00 UTC\\nLABEL: Barman backup pg1 20261129T100000\\nSTART TIMELINE: 1\\n'
begin_offset=40
begin_time=2026-11-29 10:00:00.123456+00:00
begin_wal=000000010000000000000005
begin_xlog=0/500028
end_offset=256
end_time=2026-11-29 10:00:09.5+00:00
end_wal=000000010000000000000006
end_xlog=0/600100
status={status}
timeline=1
version=150018
"""


# --- retention_policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("REDUNDANCY 2", Redundancy(2)),
        ("  redundancy\t07 ", Redundancy(7)),
        ("REDUNDANCY 2\n", Redundancy(2)),  # Barman's \s* takes a trailing newline too
        ("RECOVERY WINDOW OF 3 DAYS", RecoveryWindow(3, "DAYS")),
        ("recovery window of 1 week", RecoveryWindow(1, "WEEKS")),
        ("Recovery  Window Of 2 Months", RecoveryWindow(2, "MONTHS")),
    ],
)
def test_policy_parses_barman_syntax(text, expected):
    assert parse_retention_policy(text) == expected


def test_policy_units_are_barmans():
    assert parse_retention_policy("RECOVERY WINDOW OF 2 MONTHS").window == timedelta(days=62)
    assert parse_retention_policy("RECOVERY WINDOW OF 2 WEEKS").window == timedelta(days=14)
    assert str(parse_retention_policy("recovery window of 1 day")) == "RECOVERY WINDOW OF 1 DAYS"


@pytest.mark.parametrize(
    "text, words",
    [
        ("REDUNDANCY", "whole number"),
        ("REDUNDANCY two", "whole number"),
        ("REDUNDANCY 0", "at least 1"),
        ("REDUNDANCY -1", "whole number"),
        ("REDUNDANCY \u0663", "whole number"),  # Arabic-Indic three: Python's \d would take it
        ("RECOVERY WINDOW OF 3 YEARS", "DAYS, WEEKS or MONTHS"),
        ("RECOVERY WINDOW 3 DAYS", "DAYS, WEEKS or MONTHS"),
        ("RECOVERY WINDOW OF 0 DAYS", "at least 1"),
        ("RECOVERY WINDOW OF 99999999999 MONTHS", "too long"),
        ("KEEP 3", "expected 'REDUNDANCY n'"),
        ("", "expected 'REDUNDANCY n'"),
    ],
)
def test_policy_refuses_with_one_clear_error(text, words):
    with pytest.raises(ValueError) as err:
        parse_retention_policy(text)
    assert words in str(err.value) and "\n" not in str(err.value)


@given(st.text(max_size=60))
def test_policy_parser_only_raises_value_error(text):
    try:
        policy = parse_retention_policy(text)
    except ValueError:
        return
    assert parse_retention_policy(str(policy)) == policy


def test_policy_error_clips_a_huge_value():
    with pytest.raises(ValueError) as err:
        parse_retention_policy("x" * 1_000_000)
    assert len(str(err.value)) < 600


# --- .backup history files ----------------------------------------------------------------


def test_backup_history_file_parses():
    name, content = backup_file(1, 2, 3, "nightly: 1")
    b = parse_backup_history(name, content)
    assert (b.source, b.label, b.timeline) == ("walq", "nightly: 1", 1)
    assert (b.start_wal, b.stop_wal) == (seg(1, 2), seg(1, 3))
    assert (b.start_lsn, b.stop_lsn) == (0x200028, 0x300100)
    assert b.start_time == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    assert b.stop_time == datetime(2026, 11, 30, 6, 0, 5, tzinfo=UTC)
    assert not b.complete  # only known_backups, which sees the archive, can say


@pytest.mark.parametrize(
    "mutate, words",
    [
        (
            lambda t: t.replace(
                "(file 000000010000000000000002)", "(file 000000010000000000000009)"
            ),
            "not its own segment",
        ),
        (lambda t: t.replace("STOP WAL LOCATION", "STOP WAL PLACE"), "STOP WAL LOCATION"),
        (lambda t: t.replace("START TIMELINE: 1", "START TIMELINE: 2"), "timeline"),
        (
            lambda t: t.replace("START TIMELINE: 1", "START TIMELINE: \u00b9"),
            "timeline",
        ),  # isdigit, not int
        (lambda t: t.replace("0/300100", "0/100100"), "before START"),
        (lambda t: t.replace("LABEL: b\n", "LABEL: b\nLABEL: c\n"), "twice"),
        (lambda t: t.replace("0/200028 (", "1/200028 ("), "not in file"),
        (lambda t: "garbage\n", "START WAL LOCATION"),
    ],
)
def test_backup_history_file_refuses_what_postgres_never_writes(mutate, words):
    name, content = backup_file(1, 2, 3)
    with pytest.raises(ValueError) as err:
        parse_backup_history(name, mutate(content.decode()).encode())
    assert words in str(err.value)


def test_backup_history_needs_a_backup_file_name():
    _, content = backup_file(1, 2, 3)
    with pytest.raises(ValueError, match="not a backup history file name"):
        parse_backup_history(seg(1, 2), content)


@pytest.mark.parametrize(
    "text, zone, expected",
    [
        ("2026-11-30 06:00:00 UTC", None, datetime(2026, 11, 30, 6, tzinfo=UTC)),
        ("2026-11-30 06:00:00 GMT", None, datetime(2026, 11, 30, 6, tzinfo=UTC)),
        ("2026-11-30 06:00:00 +03", None, datetime(2026, 11, 30, 3, tzinfo=UTC)),
        ("2026-11-30 06:00:00 -0530", None, datetime(2026, 11, 30, 11, 30, tzinfo=UTC)),
        (
            "2026-11-30 06:00:00 CET",
            ZoneInfo("Europe/Paris"),
            datetime(2026, 11, 30, 5, tzinfo=UTC),
        ),
        (
            "2026-07-30 06:00:00 CEST",
            ZoneInfo("Europe/Paris"),
            datetime(2026, 7, 30, 4, tzinfo=UTC),
        ),
        (
            "2026-11-30 06:00:00 CST",
            ZoneInfo("Europe/Paris"),
            None,
        ),  # ambiguous abbreviation: no guess
        ("2026-11-30 06:00:00", None, None),
    ],
)
def test_postgres_times_become_aware_or_none(text, zone, expected):
    got = pg_time(text, zone)
    assert got == expected
    assert got is None or got.tzinfo is not None


# --- Barman backup.info -------------------------------------------------------------------


def test_barman_backup_info_parses():
    b = parse_barman_info("20261129T100000", BARMAN_INFO.format(status="DONE").encode())
    assert (b.source, b.name, b.barman_status, b.timeline) == (
        "barman",
        "20261129T100000",
        "DONE",
        1,
    )
    assert (b.start_wal, b.stop_wal, b.start_lsn, b.stop_lsn) == (
        seg(1, 5),
        seg(1, 6),
        0x500028,
        0x600100,
    )
    assert b.label == "Barman backup pg1 20261129T100000"
    assert b.stop_time == datetime(2026, 11, 29, 10, 0, 9, 500000, tzinfo=UTC)
    assert b.done and b.pinned


def test_barman_failed_backup_is_neither_done_nor_pinned():
    b = parse_barman_info("x", BARMAN_INFO.format(status="FAILED").encode())
    assert not b.done and not b.pinned


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda t: t.replace("end_wal=000000010000000000000006", "end_wal=None"), "end_wal"),
        (lambda t: t.replace("begin_xlog=0/500028", "begin_xlog=None"), "begin_wal/begin_xlog"),
        (lambda t: t.replace("timeline=1", "timeline=2"), "does not match"),
        (lambda t: t.replace("begin_xlog=0/500028", "begin_xlog=1/500028"), "not in begin_wal"),
        (lambda t: t + "no equals sign\n", "invalid backup.info line"),
        (
            lambda t: t.replace("end_time=2026-11-29 10:00:09.5+00:00", "end_time=yesterday"),
            "not a time",
        ),
        (lambda t: t.replace("backup_label='", "backup_label=__import__('os')#"), "string literal"),
    ],
)
def test_barman_backup_info_refuses_broken_files(mutate, words):
    with pytest.raises(ValueError) as err:
        parse_barman_info("20261129T100000", mutate(BARMAN_INFO.format(status="DONE")).encode())
    assert words in str(err.value) and "20261129T100000" in str(err.value)


def test_barman_naive_time_is_local_like_barman():
    text = BARMAN_INFO.format(status="DONE").replace(
        "end_time=2026-11-29 10:00:09.5+00:00", "end_time=2026-11-29 10:00:09"
    )
    b = parse_barman_info("x", text.encode())
    assert b.stop_time == datetime(2026, 11, 29, 10, 0, 9).astimezone()


def test_read_barman_backup_infos_reads_both_layouts(tmp_path):
    (tmp_path / "base" / "20261128T100000").mkdir(parents=True)
    (tmp_path / "base" / "20261128T100000" / "backup.info").write_text("status=DONE\nold=1\n")
    (tmp_path / "base" / "20261129T100000").mkdir()
    (tmp_path / "base" / "20261129T100000" / "backup.info").write_text("status=FAILED\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "20261129T100000-backup.info").write_text("status=DONE\n")  # meta wins
    (tmp_path / "meta" / "-backup.info").write_text("status=DONE\n")
    (tmp_path / "meta" / "notes.txt").write_text("x")
    (tmp_path / "base" / "junk").mkdir()
    (tmp_path / "base" / "linked").mkdir()
    os.symlink("/etc/passwd", tmp_path / "base" / "linked" / "backup.info")
    assert read_barman_backup_infos(str(tmp_path)) == [
        ("20261128T100000", b"status=DONE\nold=1\n"),
        ("20261129T100000", b"status=DONE\n"),
    ]
    assert read_barman_backup_infos(str(tmp_path / "missing")) == []


_BACKUP_TEXT = backup_file(1, 2, 3)[1].decode()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda i, j, junk: (_BACKUP_TEXT[:i] + junk + _BACKUP_TEXT[j:]).encode(),
            st.integers(0, len(_BACKUP_TEXT)),
            st.integers(0, len(_BACKUP_TEXT)),
            st.text(max_size=12),
        ),
    )
)
def test_backup_parsers_raise_only_their_parse_error(content):
    """Whatever the bytes, a parser returns a backup or raises BackupParseError
    (a ValueError): known_backups turns that into a problem, never a crash."""
    for parse in (
        lambda c: parse_backup_history(backup_file(1, 2, 3)[0], c),
        lambda c: parse_barman_info("20261129T100000", c),
    ):
        with contextlib.suppress(BackupParseError):
            parse(content)


# --- known_backups ---------------------------------------------------------------------------


def archive_of(files: dict[str, bytes], segments: list[str]) -> tuple[list[str], dict[str, bytes]]:
    return sorted([*files, *segments]), files


def test_known_backups_needs_the_stop_segment_archived():
    name, content = backup_file(1, 5, 6)
    names = [name, seg(1, 5)]
    found = known_backups(names, {name: content}.__getitem__)
    assert [b.complete for b in found.backups] == [False]
    found = known_backups([*names, seg(1, 6)], {name: content}.__getitem__)
    assert [b.complete for b in found.backups] == [True]


def test_known_backups_with_seg_size_needs_every_segment_between():
    name, content = backup_file(1, 5, 8)
    names = [name, seg(1, 5), seg(1, 6), seg(1, 8)]
    assert known_backups(names, {name: content}.__getitem__).backups[0].complete
    assert not known_backups(names, {name: content}.__getitem__, seg_size=SEG).backups[0].complete
    names.append(seg(1, 7))
    assert known_backups(names, {name: content}.__getitem__, seg_size=SEG).backups[0].complete


def test_barman_wins_when_both_describe_one_backup():
    name, content = backup_file(1, 5, 6, "Barman backup pg1 20261129T100000")
    names = [name, seg(1, 5), seg(1, 6)]
    done = [("20261129T100000", BARMAN_INFO.format(status="DONE").encode())]
    found = known_backups(names, {name: content}.__getitem__, done)
    assert [(b.source, b.name, b.complete) for b in found.backups] == [
        ("barman", "20261129T100000", True)
    ]
    failed = [("20261129T100000", BARMAN_INFO.format(status="FAILED").encode())]
    found = known_backups(names, {name: content}.__getitem__, failed)
    assert [(b.source, b.complete) for b in found.backups] == [("barman", False)]  # the veto
    other_label = backup_file(1, 5, 6, "another backup at the same LSN")
    found = known_backups(
        [other_label[0], seg(1, 5), seg(1, 6)], {other_label[0]: other_label[1]}.__getitem__, done
    )
    assert sorted(b.source for b in found.backups) == ["barman", "walq"]


def test_known_backups_reports_unreadable_descriptions_and_propagates_io_errors():
    good, good_content = backup_file(1, 5, 6)
    bad = f"{seg(1, 7)}.00000028.backup"
    read = {good: good_content, bad: b"START WAL LOCATION: nonsense\n"}.__getitem__
    found = known_backups([good, bad], read, [("20261129T100000", b"status=DONE\n")])
    assert [b.name for b in found.backups] == [good]
    assert len(found.problems) == 2 and any(bad in p for p in found.problems)

    def broken(name: str) -> bytes:
        raise OSError("storage unreachable")

    with pytest.raises(OSError):
        known_backups([good], broken)


# --- lineage -----------------------------------------------------------------------------------


def test_lineage_from_history_files():
    lin = Lineage.parse({2: history((1, 0x1F01B58)), 3: history((1, 0x1F01B58), (2, 0x5000000))})
    assert (lin.parent(3), lin.parent(2), lin.parent(1)) == (2, 1, None)
    assert lin.ancestors(3) == (2, 1) and lin.ancestors(1) == ()
    assert lin.switch_point(3) == 0x5000000 and lin.switch_point(1) is None
    assert [(b.tli, b.begin, b.end) for b in lin.line(3)] == [
        (1, 0, 0x1F01B58),
        (2, 0x1F01B58, 0x5000000),
        (3, 0x5000000, None),
    ]
    assert lin.on_line(3, 1, 0x1F01B57) and not lin.on_line(3, 1, 0x1F01B58)
    assert lin.on_line(3, 2, 0x1F01B58) and not lin.on_line(3, 2, 0x5000000)
    assert lin.is_ancestor(1, 3) and not lin.is_ancestor(3, 1)
    assert lin.timelines == {1, 2, 3}


def test_lineage_learns_a_missing_history_from_a_descendant():
    lin = Lineage.parse({3: history((1, 0x100), (2, 0x200))})
    assert lin.known(2) and lin.parent(2) == 1 and lin.switch_point(2) == 0x100
    assert not lin.known(4) and lin.ancestors(4) == () and lin.known(1)


def test_lineage_reads_history_as_postgres_does():
    """Reason optional, tabs inside it allowed, blank/comment lines skipped."""
    lin = Lineage.parse({3: b'# comment\n\n1\t0/100\n  2\t0/200\tat restore point "a\tb"\n'})
    assert lin.ancestors(3) == (2, 1) and lin.switch_point(3) == 0x200


def test_lineage_ignores_numbers():
    """Lineage follows the history, never the numbers: even a child numbered below its
    parent (PostgreSQL allocates increasing numbers, but nothing here relies on it)."""
    lin = Lineage.parse({2: history((5, 0x9000000))})
    assert lin.ancestors(2) == (5,) and lin.is_ancestor(5, 2) and not lin.is_ancestor(2, 5)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "no timeline line"),
        (b"1\n", "parentTLI"),
        (b"x\t0/100\treason\n", "parentTLI"),
        (b"3\t0/100\tx\n", "twice"),
        (b"1\t0/200\tx\n2\t0/100\tx\n", "backwards"),
        (b"1\tnot-an-lsn\tx\n", "LSN"),
    ],
)
def test_lineage_refuses_broken_history(content, words):
    with pytest.raises(LineageError) as err:
        Lineage.parse({3: content})
    assert words in str(err.value)


# --- plan_expiry: one timeline -----------------------------------------------------------------


def three_backups() -> tuple[list[BackupInfo], list[str]]:
    t = NOW - timedelta(days=10)
    backups = [
        info("b1", 1, 2, 3, t),
        info("b2", 1, 6, 7, t + timedelta(days=3)),
        info("b3", 1, 10, 11, t + timedelta(days=6)),
    ]
    names = [seg(1, n) for n in range(1, 15)]
    names += [f"{b.start_wal}.00000028.backup" for b in backups]
    return backups, names


def test_redundancy_expires_exactly_what_precedes_the_oldest_kept_backup():
    backups, names = three_backups()
    plan = plan_expiry(Redundancy(2), backups, names, Lineage({}), NOW)
    assert plan.refused is None
    assert set(plan.delete) == {seg(1, n) for n in range(1, 6)} | {f"{seg(1, 2)}.00000028.backup"}
    assert set(plan.keep) == set(names) - set(plan.delete)
    assert [b.name for b in plan.retained] == ["b2", "b3"] and [b.name for b in plan.expired] == [
        "b1"
    ]
    assert [b.name for b in plan.oldest_retained] == ["b2"]
    assert plan.timelines[1].first_kept == seg(1, 6)


def test_redundancy_counts_only_complete_backups():
    backups, names = three_backups()
    backups[2] = info("b3", 1, 10, 11, backups[2].stop_time, complete=False)
    plan = plan_expiry(Redundancy(2), backups, names, Lineage({}), NOW)
    assert [b.name for b in plan.retained] == ["b1", "b2"] and [
        b.name for b in plan.incomplete
    ] == ["b3"]
    assert set(plan.delete) == {seg(1, 1)}


def test_never_deletes_history_or_unknown_names():
    backups, names = three_backups()
    names += ["00000002.history", "00000001.history", "README", "00000001000000000000000x"]
    plan = plan_expiry(Redundancy(1), backups, names, Lineage({}), NOW)
    assert {"00000002.history", "00000001.history", "README", "00000001000000000000000x"} <= set(
        plan.keep
    )


def test_refuses_without_a_backup_never_deleting_everything():
    _, names = three_backups()
    plan = plan_expiry(Redundancy(1), [], names, Lineage({}), NOW)
    assert plan.refused and "no base backup is known" in plan.refused.reason
    assert plan.delete == () and set(plan.keep) == set(names)


def test_refuses_when_no_backup_is_complete():
    backups, names = three_backups()
    plan = plan_expiry(
        Redundancy(1),
        [info(b.name, 1, 2, 3, complete=False) for b in backups],
        names,
        Lineage({}),
        NOW,
    )
    assert plan.refused and "complete" in plan.refused.reason and plan.delete == ()


def test_refuses_while_a_backup_description_is_unreadable():
    backups, names = three_backups()
    plan = plan_expiry(
        Redundancy(1), backups, names, Lineage({}), NOW, problems=["x.backup: garbage"]
    )
    assert plan.refused and "x.backup: garbage" in plan.refused.reason and plan.delete == ()


def test_plan_needs_an_aware_now():
    backups, names = three_backups()
    with pytest.raises(ValueError):
        plan_expiry(Redundancy(1), backups, names, Lineage({}), datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "days, kept",
    [
        (1, ["b3"]),  # b3 ended 4 days ago, before the window: recovery starts from it
        (5, ["b2", "b3"]),  # b3 is inside; b2 ended 7 days ago, before the window
        (8, ["b1", "b2", "b3"]),
        (30, ["b1", "b2", "b3"]),
    ],
)
def test_recovery_window_keeps_the_backup_that_ended_before_it(days, kept):
    backups, names = three_backups()
    plan = plan_expiry(RecoveryWindow(days, "DAYS"), backups, names, Lineage({}), NOW)
    assert [b.name for b in plan.retained] == kept
    first = {"b1": 2, "b2": 6, "b3": 10}[kept[0]]
    assert {n for n in names if n[:24] < seg(1, first)} == set(plan.delete)


def test_recovery_window_boundary_is_barmans():
    """A backup that ended exactly at the window's start is inside it (Barman compares
    end_time < point), so the older one is kept to cover that instant too."""
    backups, names = three_backups()
    plan = plan_expiry(
        RecoveryWindow(1, "DAYS"),
        backups,
        names,
        Lineage({}),
        backups[2].stop_time + timedelta(days=1),
    )
    assert [b.name for b in plan.retained] == ["b2", "b3"]


def test_recovery_window_with_unknown_times_keeps_them():
    backups, names = three_backups()
    backups[2] = info("b3", 1, 10, 11, None)
    plan = plan_expiry(RecoveryWindow(1, "DAYS"), backups, names, Lineage({}), NOW)
    assert [b.name for b in plan.retained] == ["b2", "b3"]


def test_barman_backups_barman_still_holds_are_never_expired():
    backups, names = three_backups()
    backups[0] = info(
        "20261120T000000", 1, 2, 3, backups[0].stop_time, source="barman", status="DONE"
    )
    plan = plan_expiry(Redundancy(1), backups, names, Lineage({}), NOW)
    assert [b.name for b in plan.retained] == ["20261120T000000", "b3"]
    assert set(plan.delete) == {seg(1, 1)}


def test_partial_files_share_their_segments_fate():
    backups, names = three_backups()
    names += [f"{seg(1, 4)}.partial", f"{seg(1, 12)}.partial"]
    plan = plan_expiry(Redundancy(2), backups, names, Lineage({}), NOW)
    assert f"{seg(1, 4)}.partial" in plan.delete and f"{seg(1, 12)}.partial" in plan.keep


# --- plan_expiry: timelines ------------------------------------------------------------------

SWITCH = lsn(20, 0x1B58)  # timeline 2 branches from 1 inside segment 20


def two_timelines() -> tuple[list[BackupInfo], list[str], Lineage]:
    t = NOW - timedelta(days=10)
    backups = [
        info("b1", 1, 2, 3, t),
        info("b2", 1, 10, 11, t + timedelta(days=1)),
        info("b3", 2, 30, 31, t + timedelta(days=2)),
    ]
    names = [seg(1, n) for n in range(1, 25)] + [
        f"{seg(1, 20)}.partial"
    ]  # tli 1 went on past the switch
    names += [seg(2, n) for n in range(20, 35)] + ["00000002.history"]
    return backups, names, Lineage.parse({2: history((1, SWITCH))})


def test_backup_on_older_timeline_protects_it_up_to_the_switch_and_beyond():
    backups, names, lin = two_timelines()
    plan = plan_expiry(Redundancy(2), backups, names, lin, NOW)
    assert [b.name for b in plan.retained] == ["b2", "b3"]
    assert set(plan.delete) == {seg(1, n) for n in range(1, 10)}
    assert {seg(1, 10), seg(1, 20), f"{seg(1, 20)}.partial", seg(1, 24), seg(2, 20)} <= set(
        plan.keep
    )
    assert plan.timelines[2].first_kept == seg(2, 10) and plan.timelines[2].backup == "b2"


def test_superseded_ancestor_timeline_expires_whole_when_no_backup_needs_it():
    backups, names, lin = two_timelines()
    plan = plan_expiry(Redundancy(1), backups, names, lin, NOW)
    assert [b.name for b in plan.retained] == ["b3"]
    tli1 = {n for n in names if n.startswith("00000001")}
    assert set(plan.delete) == tli1 | {seg(2, n) for n in range(20, 30)}
    assert plan.timelines[1].action == "superseded" and "00000002.history" in plan.keep


def test_sibling_and_unknown_timelines_are_kept_whole():
    backups, names, lin = two_timelines()
    names += [seg(3, n) for n in range(15, 18)] + [seg(4, 40)]
    lin = Lineage.parse(
        {2: history((1, SWITCH)), 3: history((1, lsn(15)))}
    )  # 3: a sibling of 2; 4: unknown
    plan = plan_expiry(Redundancy(1), backups, names, lin, NOW)
    assert plan.timelines[3].action == "unrelated" and plan.timelines[4].action == "unknown"
    assert {seg(3, 15), seg(3, 17), seg(4, 40)} <= set(plan.keep)


def test_backups_are_ordered_by_lineage_not_by_number_or_clock():
    """Numbers never order backups (wal-g#636), and lineage beats a clock: here timeline
    2 descends from timeline 5 and the clock of the timeline-5 backup ran ahead, yet
    b_on_2 is the newest backup because it is later on b_on_5's line."""
    lin = Lineage.parse({2: history((5, lsn(20)))})
    old = info("b_on_5", 5, 10, 11, NOW)
    new = info("b_on_2", 2, 30, 31, NOW - timedelta(days=3))
    assert [b.name for b in lineage_order([new, old], lin)] == ["b_on_5", "b_on_2"]
    names = (
        [seg(5, n) for n in range(9, 21)]
        + [seg(2, n) for n in range(20, 33)]
        + ["00000002.history"]
    )
    plan = plan_expiry(Redundancy(1), [old, new], names, lin, NOW)
    assert [b.name for b in plan.retained] == ["b_on_2"]
    assert seg(2, 32) in plan.keep and seg(2, 30) in plan.keep


def test_unrelated_timelines_are_ordered_by_time_not_number():
    """wal-g#636 after pg_upgrade: the new cluster starts again at timeline 1, the old
    one reached timeline 5, and no history relates them. Time decides: the timeline-1
    backup is the newest; the old timeline, whose ancestry is unknown, is kept whole."""
    old = info("old_on_5", 5, 10, 11, NOW - timedelta(days=2))
    new = info("new_on_1", 1, 3, 4, NOW - timedelta(days=1))
    assert [b.name for b in lineage_order([new, old], Lineage({}))] == ["old_on_5", "new_on_1"]
    names = [seg(5, n) for n in range(9, 13)] + [seg(1, n) for n in range(1, 6)]
    plan = plan_expiry(Redundancy(1), [old, new], names, Lineage({}), NOW)
    assert [b.name for b in plan.retained] == ["new_on_1"]
    assert set(plan.delete) == {seg(1, 1), seg(1, 2)} and plan.timelines[5].action == "unknown"


# --- properties ---------------------------------------------------------------------------------


@st.composite
def single_line_archives(draw):
    n = draw(st.integers(min_value=1, max_value=40))
    present = sorted(draw(st.sets(st.integers(min_value=0, max_value=n), min_size=1)))
    starts = sorted(draw(st.sets(st.sampled_from(present), min_size=0, max_size=5)))
    backups = []
    for i, s in enumerate(starts):
        stop = min(draw(st.integers(min_value=s, max_value=s + 2)), n)
        when = NOW - timedelta(days=draw(st.integers(min_value=0, max_value=30)))
        backups.append(info(f"b{i}", 1, s, stop, when, complete=draw(st.booleans())))
    names = [seg(1, p) for p in present] + [f"{b.start_wal}.00000028.backup" for b in backups]
    names += draw(
        st.lists(st.sampled_from(["00000002.history", f"{seg(1, n)}.partial"]), max_size=2)
    )
    policy = draw(
        st.one_of(
            st.builds(Redundancy, st.integers(1, 4)),
            st.builds(RecoveryWindow, st.integers(1, 40), st.just("DAYS")),
        )
    )
    return policy, backups, names


@settings(max_examples=300, deadline=None)
@given(single_line_archives())
def test_expiry_invariants(case):
    policy, backups, names = case
    plan = plan_expiry(policy, backups, names, Lineage({}), NOW)
    assert set(plan.delete) | set(plan.keep) == set(names) and not set(plan.delete) & set(plan.keep)
    assert not any(n.endswith(".history") for n in plan.delete)
    if not any(b.complete for b in backups):
        assert plan.refused and not plan.delete
        return
    oldest = min(b.start_wal for b in plan.retained)
    assert all(n[:24] < oldest for n in plan.delete)
    assert all(n in plan.keep for n in names if n[:24] >= oldest)
    kept = [b for b in plan.retained if b.complete]
    if isinstance(policy, Redundancy):
        assert len(kept) == min(policy.count, sum(b.complete for b in backups))
    # idempotent: planning again over what is left deletes nothing more
    left_backups = [b for b in backups if f"{b.start_wal}.00000028.backup" in plan.keep]
    again = plan_expiry(policy, left_backups, plan.keep, Lineage({}), NOW)
    assert again.delete == ()


@st.composite
def timeline_trees(draw):
    """Up to four timelines, each branching from an earlier one inside the parent's
    stretch; segments on every timeline; backups anywhere on them."""
    count = draw(st.integers(min_value=1, max_value=4))
    first = {1: 0}  # first segment of each timeline
    entries: dict[int, list[tuple[int, int]]] = {1: []}
    last = {1: draw(st.integers(min_value=5, max_value=30))}
    for tli in range(2, count + 1):
        parent = draw(st.integers(min_value=1, max_value=tli - 1))
        at = draw(st.integers(min_value=first[parent] + 1, max_value=last[parent] + 1))
        switch = lsn(at, draw(st.sampled_from([0, 0x1B58])))
        entries[tli] = [*entries[parent], (parent, switch)]
        first[tli] = at
        last[tli] = at + draw(st.integers(min_value=0, max_value=15))
    names = [seg(t, n) for t in first for n in range(first[t], last[t] + 1)]
    names += [f"{t:08X}.history" for t in entries if entries[t]]
    backups = []
    for i in range(draw(st.integers(min_value=0, max_value=5))):
        t = draw(st.sampled_from(sorted(first)))
        start = (
            draw(st.integers(min_value=first[t] + 1 if t > 1 else 0, max_value=last[t]))
            if last[t] > first[t] or t == 1
            else None
        )
        if start is None:
            continue
        b = info(
            f"b{i}",
            t,
            start,
            start,
            NOW - timedelta(hours=draw(st.integers(0, 500))),
            complete=draw(st.booleans()),
        )
        backups.append(b)
        names.append(f"{b.start_wal}.00000028.backup")
    lineage = Lineage({t: e for t, e in entries.items() if e})
    policy = draw(
        st.one_of(
            st.builds(Redundancy, st.integers(1, 3)),
            st.builds(RecoveryWindow, st.integers(1, 20), st.just("DAYS")),
        )
    )
    return policy, backups, names, lineage


@settings(max_examples=300, deadline=None)
@given(timeline_trees())
def test_expiry_never_deletes_what_a_retained_backup_can_replay(case):
    policy, backups, names, lineage = case
    plan = plan_expiry(policy, backups, names, lineage, NOW)
    assert set(plan.delete) | set(plan.keep) == set(names)
    assert not any(n.endswith(".history") for n in plan.delete)
    if plan.refused:
        assert plan.delete == ()
        return
    for name in plan.delete:
        tli = int(name[:8], 16)
        for b in plan.retained:
            # a restore from b that follows history to tli replays name when b is on
            # tli's line and name is at or after b's start
            assert not (
                lineage.on_line(tli, b.timeline, b.start_lsn) and name[8:24] >= b.start_wal[8:]
            ), (name, b.name)
    # Idempotent while clocks agree with lineage. When a later backup on a line carries
    # an earlier time than one before it, the order of unrelated branches can depend on
    # the expired backup; a rerun then deletes more, and still only what no retained
    # backup replays (checked above for every plan).
    complete = [b for b in backups if b.complete]
    if all(
        a.stop_time <= b.stop_time
        for a in complete
        for b in complete
        if _lineage_precedes(a, b, lineage)
    ):
        left = [b for b in backups if f"{b.start_wal}.00000028.backup" in plan.keep]
        assert plan_expiry(policy, left, plan.keep, lineage, NOW).delete == ()


def _lineage_precedes(a: BackupInfo, b: BackupInfo, lineage: Lineage) -> bool:
    return a.start_lsn < b.start_lsn and lineage.on_line(b.timeline, a.timeline, a.start_lsn)


# --- plan_delete_before ---------------------------------------------------------------------------


def test_delete_before_on_one_timeline():
    backups, names = three_backups()
    plan = plan_delete_before(seg(1, 6), names, Lineage({}), seg_size=SEG)
    assert set(plan.delete) == {n for n in names if n[:24] < seg(1, 6)}
    assert seg(1, 6) in plan.keep and plan.refused is None


def test_delete_before_follows_the_line_into_ancestors():
    _, names, lin = two_timelines()
    plan = plan_delete_before(seg(2, 25), names, lin, seg_size=SEG)
    expected = (
        {seg(1, n) for n in range(1, 21)}
        | {f"{seg(1, 20)}.partial"}
        | {seg(2, n) for n in range(20, 25)}
    )
    assert set(plan.delete) == expected
    assert {seg(1, 21), seg(1, 24), "00000002.history", seg(2, 25)} <= set(
        plan.keep
    )  # tli 1's own tail stays
    assert any("after their switch point" in n for n in plan.notes)


def test_delete_before_a_timeline_leaves_its_descendants():
    _, names, lin = two_timelines()
    plan = plan_delete_before(seg(1, 22), names, lin, seg_size=SEG)
    assert set(plan.delete) == {
        n for n in names if n.startswith("00000001") and n[:24] < seg(1, 22)
    }
    assert all(n in plan.keep for n in names if n.startswith("00000002"))


def test_delete_before_refuses_a_name_the_archive_does_not_hold():
    _, names = three_backups()
    plan = plan_delete_before(seg(1, 0xFFF), names, Lineage({}), seg_size=SEG)
    assert plan.refused and plan.delete == () and set(plan.keep) == set(names)
    with pytest.raises(ValueError):
        plan_delete_before("00000002.history", names, Lineage({}), seg_size=SEG)


# --- real clusters ----------------------------------------------------------------------------------


def archived_everything(cluster: Cluster, wal: str) -> None:
    def done() -> bool:
        last = cluster.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        ready = cluster.psql(
            "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'"
        )
        return last[:24] >= wal and ready == "0"

    wait_for(done, 120, f"the archiver to reach {wal}\n{cluster.log()}", interval=0.1)


def take_backup(cluster: Cluster, root: Path, after: datetime | None) -> datetime:
    """pg_basebackup into root/data; starts on a later wall-clock second than ``after``
    (.backup times have one-second resolution), returns when it finished."""
    if after is not None:
        wait_for(
            lambda: datetime.now(UTC).replace(microsecond=0) > after,
            5,
            "the next second",
            interval=0.02,
        )
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    chown_postgres(root)
    cluster.basebackup(root / "data")
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def real_backups() -> Iterator[tuple[Path, ZoneInfo]]:
    """Three real base backups (b0..b2) on timeline 1 with pgbench between them, archived
    via cp into archive/: built once for this module, whose tests each work on a copy."""
    root = fresh_dir("real-archive")
    archive = root / "archive"
    archive.mkdir()
    chown_postgres(root)
    pg = Cluster(root / "pg").initdb(
        conf={
            "archive_mode": "on",
            "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
        },
    )
    try:
        pg.start()
        pg.pgbench_init(1)
        finished = None
        for i in range(3):
            if i:
                pg.pgbench(300)
            finished = take_backup(pg, root / f"b{i}", finished)
        pg.pgbench(100)
        archived_everything(pg, pg.switch_wal())
        zone = ZoneInfo(pg.psql("SHOW log_timezone"))
    finally:
        pg.stop("immediate")
    yield root, zone
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def real_archive(real_backups, workdir) -> tuple[Path, ZoneInfo]:
    """This test's own copy of the module's archive and of its newest backup (workdir/b2)."""
    root, zone = real_backups
    for name in ("archive", "b2"):
        subprocess.run(["cp", "-a", str(root / name), str(workdir / name)], check=True)
    return workdir / "archive", zone


def listing(archive: Path) -> tuple[list[str], object]:
    names = sorted(os.listdir(archive))
    return names, lambda name: (archive / name).read_bytes()


def test_real_backups_redundancy_and_window(real_archive):
    archive, zone = real_archive
    names, read = listing(archive)
    found = known_backups(names, read, seg_size=SEG, zone=zone)
    assert found.problems == ()
    b1, b2, b3 = found.backups
    assert all(b.complete and b.source == "walq" and b.timeline == 1 for b in found.backups)
    assert all(b.label == "pg_basebackup base backup" for b in found.backups)
    assert all(b.start_time.tzinfo and b.stop_time.tzinfo for b in found.backups)
    assert b1.stop_time < b2.start_time <= b2.stop_time < b3.start_time
    assert b1.start_wal < b2.start_wal < b3.start_wal and all(
        b.start_wal in names for b in found.backups
    )
    assert lsn_to_segment(1, b2.start_lsn, SEG) == b2.start_wal

    lineage = Lineage.from_archive(names, read)
    expected = {n for n in names if n[:24] < b2.start_wal}
    assert min(names) in expected and any(n.endswith(".backup") for n in expected)

    now = datetime.now(UTC)
    plan = plan_expiry(Redundancy(2), found.backups, names, lineage, now)
    assert set(plan.delete) == expected
    assert (
        b2.start_wal in plan.keep
        and next(n for n in names if n.startswith(b2.start_wal + ".")) in plan.keep
    )
    assert [b.name for b in plan.retained] == [b2.name, b3.name]

    # a recovery window that starts the second b3 ended keeps b2 (ended before it) and b3
    window = RecoveryWindow(1, "WEEKS")
    plan = plan_expiry(window, found.backups, names, lineage, b3.stop_time + window.window)
    assert set(plan.delete) == expected
    plan = plan_expiry(
        window, found.backups, names, lineage, b3.stop_time + window.window + timedelta(seconds=1)
    )
    assert set(plan.delete) == {n for n in names if n[:24] < b3.start_wal}
    assert plan_delete_before(b2.start_wal, names, lineage, seg_size=SEG).delete == tuple(
        sorted(expected)
    )

    # without b3's stop segment b3 is incomplete: REDUNDANCY 2 falls back to b1 and b2
    partial_archive = [n for n in names if n != b3.stop_wal]
    found = known_backups(partial_archive, read, seg_size=SEG, zone=zone)
    assert [b.complete for b in found.backups] == [True, True, False]
    plan = plan_expiry(Redundancy(2), found.backups, partial_archive, lineage, now)
    assert [b.name for b in plan.retained] == [b1.name, b2.name]
    assert set(plan.delete) == {n for n in names if n[:24] < b1.start_wal}


def test_real_timeline_switch(real_archive, workdir):
    archive, zone = real_archive
    # restore the third backup, stop as soon as it is consistent, promote: timeline 2
    promoted = Cluster(workdir / "b2")
    promoted.configure(
        {
            "port": str(promoted.port),
            "unix_socket_directories": f"'{promoted.root}'",
            "restore_command": f"'cp {archive}/%f %p'",
            "recovery_target": "'immediate'",
            "recovery_target_action": "'promote'",
            "archive_mode": "on",
            "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
        }
    )
    promoted._run(["touch", str(promoted.data / "recovery.signal")])
    promoted.start()
    try:
        promoted.wait_promoted()
        promoted.pgbench(200)
        take_backup(promoted, workdir / "b3", datetime.now(UTC))
        promoted.pgbench(100)
        last = promoted.switch_wal()
        assert last.startswith("00000002")
        archived_everything(promoted, last)
    finally:
        promoted.stop("immediate")

    names, read = listing(archive)
    lineage = Lineage.from_archive(names, read)
    assert lineage.parent(2) == 1 and lineage.ancestors(2) == (1,)
    switch = lineage.switch_point(2)
    history_text = (archive / "00000002.history").read_text()
    assert switch == parse_lsn(history_text.split("\t")[1])
    found = known_backups(names, read, seg_size=SEG, zone=zone)
    b1, b2, b3, b4 = lineage_order(found.backups, lineage)
    assert (b3.timeline, b4.timeline) == (1, 2) and all(b.complete for b in (b1, b2, b3, b4))
    assert b3.start_lsn < switch <= b4.start_lsn
    switch_seg = lsn_to_segment(1, switch, SEG)
    tail = [n for n in names if n.startswith("00000001") and n[:24] > switch_seg]
    assert tail  # timeline 1 went on after the switch (pgbench, switch_wal): an abandoned tail

    # REDUNDANCY 2 keeps b3 on timeline 1: its WAL up to the switch stays
    plan = plan_expiry(Redundancy(2), found.backups, names, lineage, datetime.now(UTC))
    assert [b.name for b in plan.retained] == [b3.name, b4.name]
    assert set(plan.delete) == {
        n for n in names if n.startswith("00000001") and n[:24] < b3.start_wal
    }
    assert all(
        n in plan.keep
        for n in names
        if n.startswith("00000001") and b3.start_wal <= n[:24] <= switch_seg
    )
    assert all(n in plan.keep for n in names if n.startswith("00000002"))
    assert set(tail) <= set(plan.keep)  # b3 is on timeline 1's own line: its tail stays too

    # REDUNDANCY 1 keeps only b4: timeline 1 is superseded, timeline 2 kept from b4's start
    plan = plan_expiry(Redundancy(1), found.backups, names, lineage, datetime.now(UTC))
    assert plan.timelines[1].action == "superseded"
    assert set(plan.delete) == (
        {n for n in names if n.startswith("00000001") and not n.endswith(".history")}
        | {n for n in names if n.startswith("00000002") and len(n) > 16 and n[:24] < b4.start_wal}
    )
    assert "00000002.history" in plan.keep and b4.start_wal in plan.keep

    # delete --before on timeline 2 reaches into timeline 1 up to the switch segment
    dplan = plan_delete_before(b4.start_wal, names, lineage, seg_size=SEG)
    assert all(n[:24] <= switch_seg for n in dplan.delete if n.startswith("00000001"))
    assert set(tail) <= set(dplan.keep)
    assert b3.start_wal in dplan.delete and "00000002.history" in dplan.keep


def test_real_barman_backups_are_read_and_win(cluster_factory, workdir):
    """Barman 3.19 (backup_method = postgres) takes two base backups of a real cluster.
    walq reads its backup.info files where that Barman keeps them (meta/), and each
    backup, described twice (Barman's file and PostgreSQL's .backup file), is Barman's."""
    barman = barman_of()
    home = workdir / "barman"
    for sub in ("incoming", "errors", "streaming"):
        (home / "pg" / sub).mkdir(parents=True)
    pg = cluster_factory(
        "pg", conf={"archive_mode": "on", "archive_command": f"'cp %p {home}/pg/incoming/%f'"}
    )
    conf = workdir / "barman.conf"
    conf.write_text(
        f"[barman]\nbarman_home = {home}\nbarman_user = postgres\nlog_file = {workdir}/barman.log\n\n"
        f"[pg]\ndescription = walq test\nconninfo = {pg.conninfo}\n"
        f"streaming_conninfo = host={pg.root} port={pg.port} user=postgres\n"
        "backup_method = postgres\narchiver = on\nstreaming_archiver = off\n"
    )
    chown_postgres(workdir)
    pg.start()
    pg.pgbench_init(1)

    def run(*args: str) -> str:
        res = subprocess.run(
            [*as_postgres(), str(barman), "-c", str(conf), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, f"barman {' '.join(args)}: {res.stdout}\n{res.stderr}"
        return res.stdout

    run("switch-wal", "--force", "--archive", "pg")
    run("backup", "pg", "--wait", "--wait-timeout", "120")
    pg.pgbench(200)
    run("switch-wal", "--force", "--archive", "pg")  # else --wait waits a minute for the end WAL
    run("backup", "pg", "--wait", "--wait-timeout", "120")

    wals = home / "pg" / "wals"
    names = sorted(p.name for p in wals.rglob("*") if p.is_file() and is_wal_name(p.name))

    def read(name: str) -> bytes:
        return (wals / ("" if name.endswith(".history") else name[:16]) / name).read_bytes()

    infos = read_barman_backup_infos(str(home / "pg"))
    assert len(infos) == 2 and all(
        (home / "pg" / "meta" / f"{i}-backup.info").is_file() for i, _ in infos
    )
    found = known_backups(names, read, infos, seg_size=SEG)
    assert found.problems == ()
    assert [(b.source, b.barman_status, b.complete) for b in found.backups] == [
        ("barman", "DONE", True)
    ] * 2
    assert [b.name for b in found.backups] == [i for i, _ in infos]
    alone = known_backups(names, read, seg_size=SEG)  # what the .backup files say by themselves
    assert [(b.source, b.start_wal, b.start_lsn, b.label) for b in alone.backups] == [
        ("walq", b.start_wal, b.start_lsn, b.label) for b in found.backups
    ]
    assert all(b.label == "pg_basebackup base backup" and b.stop_time.tzinfo for b in found.backups)

    # walq's REDUNDANCY 1 expires neither: Barman still holds both
    lineage = Lineage.from_archive(names, read)
    plan = plan_expiry(Redundancy(1), found.backups, names, lineage, datetime.now(UTC))
    assert [b.name for b in plan.retained] == [i for i, _ in infos] and plan.expired == ()
    assert set(plan.delete) == {n for n in names if n[:24] < found.backups[0].start_wal}

    # once Barman deletes the older backup, walq knows only the newer one
    run("delete", "pg", infos[0][0])
    names = sorted(p.name for p in wals.rglob("*") if p.is_file() and is_wal_name(p.name))
    found = known_backups(names, read, read_barman_backup_infos(str(home / "pg")), seg_size=SEG)
    assert [(b.name, b.source) for b in found.backups] == [(infos[1][0], "barman")]
