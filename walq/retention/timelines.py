"""Timeline lineage from .history files: which WAL a timeline's history passes through.

Timelines are related by the history files PostgreSQL writes at promotion, never
by their numbers: after pg_upgrade or a restore into another archive, a lower
number can be the newer history (WAL-G deleted the wrong backups for ordering by
number, wal-g/wal-g#636). Every question here is answered from history content.

A history file ``N.history`` lists N's whole ancestry, oldest first, one line per
switch: ``parentTLI<TAB>switchpoint<TAB>reason``. WAL before a switch point
belongs to the parent, WAL at or after it to the child. So timeline N's *line*
is a list of branches ``(tli, begin, end)``: the root from LSN 0, each ancestor
up to the switch point where the next one took over, and N itself, open-ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from walq.errors import WalqError, clip
from walq.wal import WalKind, WalNameError, parse_lsn, parse_wal_name


class LineageError(ValueError):
    """History content that cannot describe a timeline's ancestry."""


@dataclass(frozen=True, slots=True)
class Branch:
    """One stretch of a timeline's line: WAL of ``tli`` from ``begin`` up to ``end``.

    ``end`` is the switch point where the next timeline on the line starts
    (exclusive), or None for the line's own timeline, which is open-ended."""

    tli: int
    begin: int
    end: int | None

    def holds(self, lsn: int) -> bool:
        return self.begin <= lsn and (self.end is None or lsn < self.end)


def parse_history(content: bytes | str) -> tuple[tuple[int, int], ...]:
    """``(parentTLI, switchpoint)`` per line, oldest first; LineageError if malformed.

    Read as PostgreSQL reads it (readTimeLineHistory): blank and ``#`` lines skipped,
    the reason optional and free text (a restore point name may hold a tab), which is
    laxer than Barman's three-field check: a history PostgreSQL follows must not stop
    expiry."""
    try:
        text = content if isinstance(content, str) else content.decode()
    except UnicodeDecodeError:
        raise LineageError("history file is not text") from None
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t", 2)
        if len(fields) < 2 or not fields[0].isascii() or not fields[0].isdigit():
            raise LineageError(
                f"history line {lineno} is not 'parentTLI<TAB>switchpoint<TAB>reason'"
            )
        try:
            entries.append((int(fields[0]), parse_lsn(fields[1].strip())))
        except WalqError:
            raise LineageError(f"history line {lineno}: {clip(fields[1])} is not an LSN") from None
    if not entries:
        raise LineageError("history file has no timeline line")
    return tuple(entries)


class Lineage:
    """The ancestry of every timeline the archive's history files describe.

    Timeline 1 is the root and has no history file. A timeline above 1 whose
    history is neither archived nor repeated in a descendant's history has an
    unknown ancestry: ``known()`` is False and its line holds only itself, so a
    planner can refuse to guess about it."""

    def __init__(self, histories: Mapping[int, Iterable[tuple[int, int]]]) -> None:
        self._entries: dict[int, tuple[tuple[int, int], ...]] = {}
        self._lines: dict[int, tuple[Branch, ...]] = {}
        for tli, entries in histories.items():
            if tli < 1:
                raise LineageError(f"timeline {tli} cannot have a history file")
            entries = tuple(entries)
            self._check(tli, entries)
            self._entries[tli] = entries

    @staticmethod
    def _check(tli: int, entries: tuple[tuple[int, int], ...]) -> None:
        if not entries:
            raise LineageError(f"history of timeline {tli} has no line")
        seen = {tli}
        last_switch = 0
        for parent, switch in entries:
            if parent in seen:
                raise LineageError(
                    f"history of timeline {tli} names timeline {parent} twice (a cycle)"
                )
            if parent < 1:
                raise LineageError(f"history of timeline {tli} names parent timeline {parent}")
            if switch < last_switch:
                raise LineageError(f"history of timeline {tli}: switch points go backwards")
            seen.add(parent)
            last_switch = switch

    @classmethod
    def parse(cls, histories: Mapping[int, bytes | str]) -> Lineage:
        """From history contents keyed by the timeline each file is named for."""
        return cls({tli: parse_history(content) for tli, content in histories.items()})

    @classmethod
    def from_archive(cls, names: Iterable[str], read_object: Callable[[str], bytes]) -> Lineage:
        """Read every ``*.history`` among archived ``names`` through ``read_object``
        (which returns an archived file's plain bytes; its errors propagate)."""
        histories: dict[int, bytes] = {}
        for name in names:
            try:
                wal = parse_wal_name(name)
            except WalNameError:
                continue
            if wal.kind is WalKind.HISTORY:
                histories[wal.tli] = read_object(name)
        return cls.parse(histories)

    def _ancestry(self, tli: int) -> tuple[tuple[int, int], ...] | None:
        """tli's own history, or the prefix a descendant's history repeats for it."""
        if tli in self._entries:
            return self._entries[tli]
        if tli == 1:
            return ()
        for entries in self._entries.values():
            for i, (parent, _switch) in enumerate(entries):
                if parent == tli:
                    return entries[:i]
        return None

    def known(self, tli: int) -> bool:
        """Whether tli's ancestry is known (always, for timeline 1)."""
        return self._ancestry(tli) is not None

    def parent(self, tli: int) -> int | None:
        """The timeline tli branched from; None for a root or an unknown ancestry."""
        entries = self._ancestry(tli)
        return entries[-1][0] if entries else None

    def switch_point(self, tli: int) -> int | None:
        """LSN where tli branched from its parent; None when it has no known parent."""
        entries = self._ancestry(tli)
        return entries[-1][1] if entries else None

    def ancestors(self, tli: int) -> tuple[int, ...]:
        """tli's ancestors, nearest first (empty for a root or an unknown ancestry)."""
        entries = self._ancestry(tli) or ()
        return tuple(parent for parent, _ in reversed(entries))

    def is_ancestor(self, older: int, tli: int) -> bool:
        return older in self.ancestors(tli)

    def line(self, tli: int) -> tuple[Branch, ...]:
        """The branches a recovery that ends on tli replays, root first."""
        if tli in self._lines:
            return self._lines[tli]
        entries = self._ancestry(tli) or ()
        branches = []
        begin = 0
        for parent, switch in entries:
            branches.append(Branch(parent, begin, switch))
            begin = switch
        branches.append(Branch(tli, begin, None))
        self._lines[tli] = tuple(branches)
        return self._lines[tli]

    def on_line(self, tli: int, position_tli: int, lsn: int) -> bool:
        """Whether WAL position ``(position_tli, lsn)`` is on tli's line: a recovery
        that starts there and follows the history to tli replays it."""
        return any(b.tli == position_tli and b.holds(lsn) for b in self.line(tli))

    @property
    def timelines(self) -> frozenset[int]:
        """Every timeline named by a history file, as its subject or as a parent."""
        named = set(self._entries)
        for entries in self._entries.values():
            named.update(parent for parent, _ in entries)
        return frozenset(named)
