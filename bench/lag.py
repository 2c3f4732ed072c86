"""Archive lag: from a WAL appearing in a server's incoming/ to its removal, which walq
does only after the commit. Shared by the sustained row (bench/sustained.py) and the
many-server run (bench/fleet_scale.py).

Files the bench publishes itself (``publish``: a dot-file, then a rename, as put-wal
does) are timed from the rename and polled by path until they are gone; directories
someone else writes into (``scanned``: a live cluster's archive_command) are listed
every ``interval`` to see files appear and go.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

Key = tuple[str, str]  # (server, WAL name)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank p-th percentile (nan for no values)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


class LagWatcher:
    """Records when each WAL appears in and leaves incoming/; a thread polls every ``interval``."""

    def __init__(self, scanned: dict[str, Path] | None = None, interval: float = 0.01) -> None:
        self.scanned = dict(scanned or {})
        self.interval = interval
        self.appeared: dict[Key, float] = {}
        self.gone: dict[Key, float] = {}
        self.max_waiting = {"fed": 0, "scanned": 0}
        self._pending: dict[Key, Path] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def publish(self, server: str, source: Path, incoming: Path) -> Key:
        """Put ``source`` into ``incoming`` under its own name, atomically (a hard link when
        the file system allows, else a copy, to a dot-file, then a rename); start its clock."""
        name = source.name
        tmp = incoming / f".{name}.feed"
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        final = incoming / name
        os.rename(tmp, final)
        key = (server, name)
        with self._lock:
            self.appeared[key] = time.perf_counter()
            self._pending[key] = final
        return key

    def waiting(self) -> int:
        """Published files not removed yet."""
        with self._lock:
            return len(self._pending)

    def _sweep(self, seen: dict[Key, float]) -> None:
        now = time.perf_counter()
        with self._lock:
            pending = list(self._pending.items())
        removed = [key for key, path in pending if not os.path.lexists(path)]
        current: set[Key] = set()
        for server, path in self.scanned.items():
            for entry in os.scandir(path):
                if not entry.name.startswith("."):
                    current.add((server, entry.name))
        with self._lock:
            for key in removed:
                self.gone.setdefault(key, now)
                del self._pending[key]
            for key in current - seen.keys():
                seen[key] = now
                self.appeared[key] = now
            for key in list(seen.keys() - current):
                self.gone.setdefault(key, now)
                del seen[key]
            fed = len(self._pending)
        self.max_waiting["fed"] = max(self.max_waiting["fed"], fed)
        self.max_waiting["scanned"] = max(self.max_waiting["scanned"], len(current))

    def _loop(self) -> None:
        seen: dict[Key, float] = {}
        while not self._stop.is_set():
            self._sweep(seen)
            time.sleep(self.interval)

    def __enter__(self) -> LagWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def lags(self, keys: list[Key] | None = None) -> list[float]:
        """Appearance-to-removal seconds of ``keys`` (default: all) that were removed."""
        with self._lock:
            wanted = self.appeared.keys() if keys is None else keys
            return [self.gone[k] - self.appeared[k] for k in wanted if k in self.gone]
