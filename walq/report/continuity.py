"""Watermark and gaps (invariant 4), computed from the archived names alone.

Per timeline, the archive must hold every segment from its first archived
segment on; the watermark is the highest segment with no hole below it on the
newest timeline. A new timeline starting at its switch segment is not a gap.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from walq.wal import WalKind, parse_wal_name, segment_name, segment_number


@dataclass
class TimelineRun:
    tli: int
    first: str
    last: str
    watermark: str  # highest segment with every earlier one (from first) present
    count: int
    gaps: list[tuple[str, str]] = field(default_factory=list)  # inclusive missing ranges


@dataclass
class Continuity:
    timelines: list[TimelineRun]

    @property
    def watermark(self) -> str | None:
        return self.timelines[-1].watermark if self.timelines else None

    @property
    def gaps(self) -> list[tuple[str, str]]:
        return [g for t in self.timelines for g in t.gaps]


def continuity(names: list[str], seg_size: int) -> Continuity:
    by_tli: dict[int, list[int]] = defaultdict(list)
    for name in names:
        wal = parse_wal_name(name)
        if wal.kind is WalKind.SEGMENT:
            by_tli[wal.tli].append(segment_number(wal, seg_size))
    runs = []
    for tli in sorted(by_tli):
        segnos = sorted(set(by_tli[tli]))
        gaps: list[tuple[str, str]] = []
        watermark = segnos[0]
        for prev, cur in zip(segnos, segnos[1:], strict=False):
            if cur != prev + 1:
                gaps.append(
                    (segment_name(tli, prev + 1, seg_size), segment_name(tli, cur - 1, seg_size))
                )
            elif not gaps:
                watermark = cur
        runs.append(
            TimelineRun(
                tli,
                segment_name(tli, segnos[0], seg_size),
                segment_name(tli, segnos[-1], seg_size),
                segment_name(tli, watermark, seg_size),
                len(segnos),
                gaps,
            )
        )
    return Continuity(runs)
