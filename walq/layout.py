"""Which directories walq deletes from, which hold data, and the rule that they never overlap.

walq removes whole trees or loops unlinking files in a few places: the archive
spool (``spool_dir``, reset per server on every ``walq archive`` run and swept by
the fleet), the restore spool (``{home}/restore-spool``, trimmed by the
prefetcher) and local storage's ``.walq-tmp`` (emptied on every run). If one of
those overlapped a directory holding WAL (a server's incoming/, streaming/,
errors/ or wals/, or ``home`` with its catalog and lock files) a routine run
would delete the archive. So the configuration is refused at load time, naming
both keys, when any two of them are equal or one lies inside the other, compared
after resolving symlinks (a path that does not exist yet resolves through its
existing ancestors). Two data directories may not overlap either: one server's
scan would move the other's files, or two servers would share one archive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from walq.config import Config

RESTORE_SPOOL = "restore-spool"
STORAGE_TMP = ".walq-tmp"  # local storage's temp dir, inside the server's wals/


@dataclass(frozen=True)
class Place:
    key: str  # the configuration key it comes from, as the operator wrote it
    path: Path
    real: str
    allowed_inside: str | None = None  # for a delete zone: the data dir it lives in by design

    def __str__(self) -> str:
        return f"{self.key} ({self.path})"


def _place(key: str, path: Path, allowed_inside: Path | None = None) -> Place:
    inside = os.path.realpath(allowed_inside) if allowed_inside is not None else None
    return Place(key, path, os.path.realpath(path), inside)


def _contains(outer: str, inner: str) -> bool:
    return os.path.commonpath([outer, inner]) == outer


def overlap(a: str, b: str) -> bool:
    """Equal, or one inside the other (both resolved)."""
    return _contains(a, b) or _contains(b, a)


def delete_zones(config: Config) -> list[Place]:
    """Directories inside which walq deletes files or trees."""
    zones = [
        _place("spool_dir", config.spool_dir),
        _place("home's restore spool", config.home / RESTORE_SPOOL),
    ]
    for server in config.servers.values():
        wals = server.local_wals_dir
        if wals is not None:
            zones.append(
                _place(f"servers.{server.name}.storage_url's temp dir", wals / STORAGE_TMP, wals)
            )
    return zones


def data_dirs(config: Config) -> list[Place]:
    """Directories whose files are WAL or archive state."""
    places = []
    for server in config.servers.values():
        for key in ("incoming_dir", "streaming_dir", "errors_dir"):
            places.append(_place(f"servers.{server.name}.{key}", getattr(server, key)))
        if server.local_wals_dir is not None:
            places.append(_place(f"servers.{server.name}.storage_url", server.local_wals_dir))
    return places


def layout_problem(config: Config) -> str | None:
    """The first overlap found, as one line naming both keys; None when the layout is safe."""
    zones = delete_zones(config)
    data = data_dirs(config)
    for i, a in enumerate(data):
        for b in data[i + 1 :]:
            if overlap(a.real, b.real):
                return f"{a} overlaps {b}"
    for zone in zones:
        for place in data:
            if overlap(zone.real, place.real) and not _is_own_temp(zone, place):
                return f"{zone} overlaps {place}"
        # home holds the catalog and the lock files: no zone may contain it
        if _contains(zone.real, os.path.realpath(config.home)):
            return f"{zone} overlaps home ({config.home}: the catalog and lock files)"
    for i, a in enumerate(zones):
        for b in zones[i + 1 :]:
            if overlap(a.real, b.real):
                return f"{a} overlaps {b}"
    return None


def _is_own_temp(zone: Place, place: Place) -> bool:
    """A server's .walq-tmp lies inside its own wals/ by design (and only inside it)."""
    return (
        zone.allowed_inside is not None
        and zone.allowed_inside == place.real
        and zone.real != place.real
        and _contains(place.real, zone.real)
    )


def check_layout(config: Config) -> None:
    """Raise ValueError (reported as one config line) when the layout could lose data."""
    problem = layout_problem(config)
    if problem is not None:
        raise ValueError(problem)
