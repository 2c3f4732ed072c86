"""retention_policy strings, and the plans that say which archived WAL may go.

The plans are values: nothing here deletes. A caller (``walq expire``, ``walq
delete``, the fleet task) prints a plan for ``--dry-run`` or carries it out.

Rules plan_expiry obeys, each for a reason:

* No backup known, or none complete, or a backup description unreadable: refuse.
  Without a backup to keep, "expire" would mean "delete everything".
* Only complete backups count toward REDUNDANCY or a recovery window (a backup whose
  stop segment is not archived cannot be restored).
* Backups are ordered by lineage (a backup on another's timeline line, earlier on
  it, is older), and only backups on unrelated branches are ordered by time; never
  by timeline number. (If a clock ran backwards, so a later backup on a line carries
  an earlier time, a rerun after expiry may rank unrelated branches differently and
  expire more: still never WAL a retained backup replays.)
* Barman backups Barman still holds (STARTED, WAITING_FOR_WALS, DONE, SYNCING) are
  always retained: walq cannot delete them, so it must not orphan them.
* Per timeline T: if a retained backup is on T's line, every file of T from the
  segment of the oldest such backup's start on is kept, everything of T before it
  goes. If T is only an ancestor of retained backups' timelines (they all start
  after T's switch point), no restore from a retained backup reads T: all of T goes,
  including a tail written after the switch. Any other timeline (a sibling branch,
  or one whose history is unknown) is kept whole: nothing retained explains it.
* ``.history`` files are never deleted. ``.partial`` and ``.backup`` files share the
  fate of the segment they are named after: a .backup file of an expired backup
  before the cutoff goes with its segments; a kept backup's .backup file is at the
  cutoff and stays; a .partial of a kept stretch of a timeline stays.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from walq.errors import clip
from walq.retention.backups import BackupInfo
from walq.retention.timelines import Lineage
from walq.wal import WalKind, WalNameError, parse_wal_name, segment_number

# --- retention_policy --------------------------------------------------------------------

Unit = Literal["DAYS", "WEEKS", "MONTHS"]
_UNITS: dict[str, Unit] = {"DAY": "DAYS", "WEEK": "WEEKS", "MONTH": "MONTHS"}
_UNIT_DAYS = {"DAYS": 1, "WEEKS": 7, "MONTHS": 31}  # Barman counts a month as 31 days

# Barman's own patterns (barman/retention_policies.py): case-insensitive, blanks
# around words (newlines included) allowed, singular units accepted. ASCII digits
# only: Python's \d would also take "REDUNDANCY \u0663", which Barman's docs never meant.
_REDUNDANCY = re.compile(r"\s*redundancy\s+([0-9]+)\s*", re.IGNORECASE | re.ASCII)
_WINDOW = re.compile(
    r"\s*recovery\s+window\s+of\s+([0-9]+)\s+(day|week|month)s?\s*", re.IGNORECASE | re.ASCII
)
_SYNTAX = "expected 'REDUNDANCY n' or 'RECOVERY WINDOW OF n {DAYS|WEEKS|MONTHS}'"


@dataclass(frozen=True, slots=True)
class Redundancy:
    """Keep the ``count`` newest complete backups and the WAL they need."""

    count: int

    def __str__(self) -> str:
        return f"REDUNDANCY {self.count}"


@dataclass(frozen=True, slots=True)
class RecoveryWindow:
    """Keep what a point-in-time recovery to any moment in the last ``value`` units needs."""

    value: int
    unit: Unit

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.value * _UNIT_DAYS[self.unit])

    def __str__(self) -> str:
        return f"RECOVERY WINDOW OF {self.value} {self.unit}"


RetentionPolicy = Redundancy | RecoveryWindow


def parse_retention_policy(text: str) -> RetentionPolicy:
    """Parse Barman's retention_policy syntax; one ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"retention_policy must be a string, not {type(text).__name__}")
    shown = clip(text)
    m = _REDUNDANCY.fullmatch(text)
    if m:
        count = int(m.group(1))
        if count < 1:
            raise ValueError(f"retention_policy {shown}: REDUNDANCY must keep at least 1 backup")
        return Redundancy(count)
    m = _WINDOW.fullmatch(text)
    if m:
        value, unit = int(m.group(1)), _UNITS[m.group(2).upper()]
        if value < 1:
            raise ValueError(
                f"retention_policy {shown}: the recovery window must be at least 1 {unit[:-1]}"
            )
        policy = RecoveryWindow(value, unit)
        try:
            policy.window  # noqa: B018 - an absurd length fails here, not at expiry
        except OverflowError:
            raise ValueError(f"retention_policy {shown}: the recovery window is too long") from None
        return policy
    words = text.split()
    head = words[0].upper() if words else ""
    if head == "REDUNDANCY":
        why = "REDUNDANCY needs one whole number of backups, e.g. 'REDUNDANCY 3'"
    elif head == "RECOVERY":
        why = "the window is 'RECOVERY WINDOW OF n' with n a whole number and DAYS, WEEKS or MONTHS"
    else:
        why = _SYNTAX
    raise ValueError(f"retention_policy {shown}: {why}")


# --- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionRefused:
    """Why a plan deletes nothing although it was asked to; the CLI exits 1 with it."""

    reason: str


TimelineAction = Literal["cutoff", "superseded", "unrelated", "unknown"]


@dataclass(frozen=True, slots=True)
class TimelineDecision:
    """What happens to one timeline's files, and why."""

    tli: int
    action: TimelineAction
    first_kept: str | None  # cutoff: the first segment name kept on this timeline
    backup: str | None  # the retained backup that decides it
    reason: str


@dataclass(frozen=True)
class ExpiryPlan:
    policy: str
    delete: tuple[str, ...]
    keep: tuple[str, ...]
    retained: tuple[BackupInfo, ...] = ()
    expired: tuple[BackupInfo, ...] = ()
    incomplete: tuple[BackupInfo, ...] = ()
    oldest_retained: tuple[BackupInfo, ...] = ()
    timelines: Mapping[int, TimelineDecision] = field(default_factory=dict)
    refused: RetentionRefused | None = None


@dataclass(frozen=True)
class DeletePlan:
    before: str
    delete: tuple[str, ...]
    keep: tuple[str, ...]
    refused: RetentionRefused | None = None
    notes: tuple[str, ...] = ()


_OLDEST = datetime.min.replace(tzinfo=UTC)


def _time_key(b: BackupInfo) -> tuple[datetime, int, str]:
    return (b.stop_time or b.start_time or _OLDEST, b.start_lsn, b.name)


def _precedes(a: BackupInfo, b: BackupInfo, lineage: Lineage) -> bool:
    """a is older than b by lineage: a starts on b's timeline line, at an earlier LSN."""
    return a.start_lsn < b.start_lsn and lineage.on_line(b.timeline, a.timeline, a.start_lsn)


def lineage_order(backups: Iterable[BackupInfo], lineage: Lineage) -> list[BackupInfo]:
    """Oldest first: every lineage relation is respected; backups on unrelated branches
    are ordered by time (stop time, else start time; unknown times count as oldest).

    Lineage precedence needs a strictly lower start LSN, so it has no cycles and this
    topological sort (time as the tie-break) always takes every backup."""
    items = sorted(set(backups), key=_time_key)
    later: list[list[int]] = [[] for _ in items]
    waiting = [0] * len(items)
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if i != j and _precedes(a, b, lineage):
                later[i].append(j)
                waiting[j] += 1
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(items[i])
        for j in later[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order


def _retain(policy: RetentionPolicy, ordered: list[BackupInfo], now: datetime) -> list[BackupInfo]:
    newest_first = ordered[::-1]
    if isinstance(policy, Redundancy):
        return newest_first[: policy.count]
    try:
        point = now - policy.window
    except OverflowError:
        return newest_first
    kept = []
    for b in newest_first:
        kept.append(b)
        if b.stop_time is not None and b.stop_time < point:
            break  # the newest backup that ended before the window: recovery starts from it
    return kept


def _segment_of(name: str) -> tuple[int, str] | None:
    """(timeline, position) of a segment, .partial or .backup name; None otherwise."""
    try:
        wal = parse_wal_name(name)
    except WalNameError:
        return None
    if wal.kind is WalKind.HISTORY:
        return None
    return wal.tli, name[8:24].upper()


def _refused(
    policy: object, names: Iterable[str], reason: str, incomplete: tuple[BackupInfo, ...] = ()
) -> ExpiryPlan:
    return ExpiryPlan(
        str(policy),
        (),
        tuple(sorted(names)),
        incomplete=incomplete,
        refused=RetentionRefused(reason),
    )


def plan_expiry(
    policy: RetentionPolicy,
    backups: Iterable[BackupInfo],
    archived: Iterable[str],
    lineage: Lineage,
    now: datetime,
    *,
    problems: Sequence[str] = (),
) -> ExpiryPlan:
    """Which archived files ``policy`` expires, given the known backups (see module doc).

    ``archived`` is every archived name (segments, .partial, .backup, .history);
    ``problems`` are unreadable backup descriptions from known_backups."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    names = sorted(set(archived))
    backups = list(backups)
    if problems:
        shown = "; ".join(problems[:3]) + (
            f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        )
        return _refused(policy, names, f"cannot read every backup description: {shown}")
    if not backups:
        return _refused(
            policy,
            names,
            (
                "no base backup is known (no .backup file archived, no Barman backup.info): "
                "expiring would delete every WAL; backups taken on a standby write no .backup file"
            ),
        )
    complete = [b for b in backups if b.complete]
    incomplete = tuple(b for b in backups if not b.complete)
    if not complete:
        return _refused(
            policy,
            names,
            (
                f"none of the {len(backups)} known backups is complete (stop WAL archived); "
                "nothing can be expired until one is"
            ),
            incomplete=incomplete,
        )

    ordered = lineage_order(complete, lineage)
    chosen = _retain(policy, ordered, now)
    retained = lineage_order([*chosen, *(b for b in backups if b.pinned)], lineage)
    expired = tuple(b for b in ordered if b not in retained)

    decisions: dict[int, TimelineDecision] = {}
    delete: list[str] = []
    keep: list[str] = []
    for name in names:
        seg = _segment_of(name)
        if seg is None:
            keep.append(name)  # .history files, and anything that is not a WAL name
            continue
        tli, position = seg
        if tli not in decisions:
            decisions[tli] = _decide(tli, retained, lineage)
        d = decisions[tli]
        gone = d.action == "superseded" or (
            d.action == "cutoff" and d.first_kept is not None and position < d.first_kept[8:]
        )
        (delete if gone else keep).append(name)

    deciding = {d.backup for d in decisions.values() if d.action == "cutoff"}
    return ExpiryPlan(
        policy=str(policy),
        delete=tuple(delete),
        keep=tuple(keep),
        retained=tuple(retained),
        expired=expired,
        incomplete=incomplete,
        oldest_retained=tuple(b for b in retained if b.name in deciding),
        timelines=decisions,
    )


def _decide(tli: int, retained: list[BackupInfo], lineage: Lineage) -> TimelineDecision:
    on_line = [b for b in retained if lineage.on_line(tli, b.timeline, b.start_lsn)]
    if on_line:
        oldest = min(on_line, key=lambda b: (b.start_wal[8:], b.name))
        first = f"{tli:08X}{oldest.start_wal[8:]}"
        return TimelineDecision(
            tli,
            "cutoff",
            first,
            oldest.name,
            f"kept from {first}: the start of retained backup {oldest.name}",
        )
    if not lineage.known(tli):
        return TimelineDecision(
            tli,
            "unknown",
            None,
            None,
            f"kept whole: timeline {tli} has no history file, its ancestry is unknown",
        )
    heirs = [b for b in retained if lineage.is_ancestor(tli, b.timeline)]
    if heirs:
        return TimelineDecision(
            tli,
            "superseded",
            None,
            heirs[0].name,
            f"expired whole: retained backups start on descendants of timeline {tli}, "
            f"after it switched (e.g. {heirs[0].name})",
        )
    return TimelineDecision(
        tli,
        "unrelated",
        None,
        None,
        f"kept whole: no retained backup is on timeline {tli}'s line or after it",
    )


def plan_delete_before(
    walname: str, archived: Iterable[str], lineage: Lineage, *, seg_size: int
) -> DeletePlan:
    """Every file of WALNAME's timeline and of its ancestors that precedes WALNAME on
    that timeline's line (pgBackRest's archive-expire-before), whatever the policy.

    On WALNAME's timeline T: every segment before it. On an ancestor A, which T's line
    follows up to a switch point: every segment before WALNAME that holds WAL from
    before that switch point (the copy of the switch segment included; the child
    holds its own). A's tail written after its switch point is another history, not
    T's, and is kept, as are other timelines and every .history file. .partial and
    .backup files go with their segment. Refused when WALNAME is not archived, so a
    mistyped name beyond the archive's end cannot empty it."""
    wal = parse_wal_name(walname)
    if wal.kind is not WalKind.SEGMENT:
        raise ValueError(f"{clip(walname)} is not a WAL segment name")
    walname = walname.upper()
    names = sorted(set(archived))
    if walname not in names:
        return DeletePlan(
            walname,
            (),
            tuple(names),
            RetentionRefused(
                f"{walname} is not in the archive: walq deletes only before a segment it holds"
            ),
        )
    limit = segment_number(walname, seg_size)
    bounds: dict[int, int | None] = {b.tli: b.end for b in lineage.line(wal.tli)}
    notes = []
    if wal.tli != 1 and not lineage.known(wal.tli):
        notes.append(f"timeline {wal.tli} has no history file: its ancestors are unknown and kept")
    delete: list[str] = []
    keep: list[str] = []
    for name in names:
        seg = _segment_of(name)
        if seg is None or seg[0] not in bounds:
            keep.append(name)
            continue
        n = segment_number(name[:24], seg_size)
        end = bounds[seg[0]]
        gone = n < limit and (end is None or n * seg_size < end)
        (delete if gone else keep).append(name)
    tails = [
        n
        for n in keep
        if (s := _segment_of(n))
        and s[0] != wal.tli
        and s[0] in bounds
        and segment_number(n[:24], seg_size) < limit
    ]
    if tails:
        notes.append(
            f"{len(tails)} files of ancestor timelines written after their switch point are kept"
        )
    return DeletePlan(walname, tuple(delete), tuple(keep), None, tuple(notes))
