"""Is archiving keeping up? The ``walq check`` lines that catch a dead archiver.

A dead cron job, a fleet without workers or a never-configured archiver leave
PostgreSQL's side looking healthy: WAL simply piles up in incoming/ and
streaming/. These lines look at that pile and at the newest archived WAL, and
stay cheap: the two directory listings, the catalog's per-state counts and the
facts ``walq status`` already gathered, never a storage listing.

- ``WAL archive`` (Barman's name): FAILED when nothing was ever archived while
  something was queued (files waiting, or catalog rows that never reached
  ``archived``); a new server that has queued nothing at all is OK, "no WAL yet".
- ``WAL maximum age``: FAILED when the newest archived WAL was archived longer
  ago than ``last_wal_maximum_age``; SKIPPED without that key, or with nothing
  archived (``WAL archive`` says why).
- ``incoming WALs queue``: FAILED when more files than ``max_incoming_wals_queue``
  wait in incoming/ and streaming/ together; no line without that key.
- ``archiver progress``: FAILED when the oldest waiting file has waited longer
  than ``archive_lag_maximum``. This one fires even when PostgreSQL is idle.

How long a file has waited is measured by walq.report.waiting, the one helper
``walq status``'s lag uses too: from its ctime (when it was published in the
directory), the file pg_receivewal is still writing excluded.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

from walq.catalog import WalState
from walq.config import Config, ServerConfig, default_archive_lag_maximum
from walq.report.result import CheckResult, Measure
from walq.report.status import ServerStatus
from walq.report.waiting import Waiting, waiting

NOT_RUNNING = "is walq archive or the fleet running?"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(seconds: float) -> str:
    """'42s', '12m 5s', '3h', '2d 4h': the largest unit and the next one when not zero."""
    whole = max(round(seconds), 0)
    for i, (unit, size) in enumerate(_UNITS):
        if whole >= size or size == 1:
            big, rest = divmod(whole, size)
            text = f"{big}{unit}"
            if i + 1 < len(_UNITS) and (small := rest // _UNITS[i + 1][1]):
                text += f" {small}{_UNITS[i + 1][0]}"
            return text
    raise AssertionError("unreachable: the last unit is one second")


@dataclass(frozen=True)
class Unlisted:
    """incoming/ or streaming/ could not be listed. The lines that need the listing fail,
    unless the path is not a directory at all: its ``… writable`` line fails then, and
    theirs are SKIPPED rather than a second report of the same fault."""

    reason: str
    reported_elsewhere: bool

    @classmethod
    def from_error(cls, exc: OSError) -> Unlisted:
        reason = f"cannot list {exc.filename}: {exc.strerror or exc}"
        return cls(reason, exc.errno == errno.ENOTDIR)

    def result(self, name: str, prefix: str = "") -> CheckResult:
        if self.reported_elsewhere:
            return CheckResult.skip(name, prefix + self.reason)
        return CheckResult(name, False, prefix + self.reason)


def _wal_archive(
    server: ServerConfig,
    status: ServerStatus,
    counts: dict[str, int],
    queue: Waiting | Unlisted,
    now: float,
) -> CheckResult:
    name = "WAL archive"
    archived_at = status["last_archived_at"]
    if status["last_archived"]:
        if archived_at is None:
            return CheckResult(name, True, f"newest {status['last_archived']}")
        age = max(now - archived_at, 0.0)
        return CheckResult(
            name,
            True,
            f"newest {status['last_archived']}, archived {format_duration(age)} ago",
            measures=(Measure("last_archived_age_seconds", age, server.last_wal_maximum_age),),
        )
    others = {state: n for state, n in counts.items() if n}
    if any(state not in (WalState.CLAIMED, WalState.FAILED) for state in others):
        # rows that got past archived (a retention state): archiving worked before
        listed = ", ".join(f"{n} {state}" for state, n in sorted(others.items()))
        return CheckResult(name, True, f"no WAL listed as archived; catalog: {listed}")
    if isinstance(queue, Unlisted):
        return queue.result(name, "nothing archived yet, and ")
    if not others and not queue.count:
        return CheckResult(name, True, "no WAL yet: a new server, nothing archived or waiting")
    if queue.count:
        return CheckResult(
            name,
            False,
            f"nothing archived yet, {queue.count} file(s) waiting; {NOT_RUNNING}",
        )
    listed = ", ".join(f"{n} {state}" for state, n in sorted(others.items()))
    return CheckResult(
        name, False, f"nothing archived yet, {listed}; please make sure WAL shipping is setup"
    )


def _wal_maximum_age(server: ServerConfig, status: ServerStatus, now: float) -> CheckResult:
    name = "WAL maximum age"
    bound = server.last_wal_maximum_age
    archived_at = status["last_archived_at"]
    if bound is None:
        return CheckResult.skip(name, "no last_wal_maximum_age")
    if archived_at is None:
        return CheckResult.skip(name, "nothing archived yet")
    age = max(now - archived_at, 0.0)
    return CheckResult(
        name,
        age <= bound,
        f"newest archived {format_duration(age)} ago, maximum {format_duration(bound)}",
    )


def _queue(server: ServerConfig, queue: Waiting | Unlisted) -> list[CheckResult]:
    limit = server.max_incoming_wals_queue
    if limit is None:
        return []
    name = "incoming WALs queue"
    if isinstance(queue, Unlisted):
        return [queue.result(name)]
    return [CheckResult(name, queue.count <= limit, f"{queue.count} waiting, maximum {limit}")]


def _archiver_progress(
    bound: float, limit: int | None, queue: Waiting | Unlisted, now: float
) -> CheckResult:
    name = "archiver progress"
    if isinstance(queue, Unlisted):
        return queue.result(name)
    queued = Measure("queue", queue.count, limit)
    if queue.oldest_since is None:
        measures = (Measure("oldest_waiting_seconds", 0, bound), queued)
        return CheckResult(name, True, "nothing waiting", measures=measures)
    age = queue.lag(now)
    measures = (Measure("oldest_waiting_seconds", age, bound), queued)
    detail = (
        f"oldest waiting {format_duration(age)}, maximum {format_duration(bound)}, "
        f"{queue.count} file(s) waiting"
    )
    if age > bound:
        detail += f"; {NOT_RUNNING}"
    return CheckResult(name, age <= bound, detail, measures=measures)


def progress_checks(
    config: Config,
    server: ServerConfig,
    status: ServerStatus,
    counts: dict[str, int],
    now: float | None = None,
) -> list[CheckResult]:
    """The lines above, in order; ``counts`` is the catalog's rows per state for ``server``."""
    now = time.time() if now is None else now
    queue: Waiting | Unlisted
    try:
        queue = waiting(server)
    except OSError as exc:
        queue = Unlisted.from_error(exc)
    bound = server.archive_lag_maximum or default_archive_lag_maximum(config.scan_interval)
    results = [_wal_archive(server, status, counts, queue, now)]
    results.append(_wal_maximum_age(server, status, now))
    results.extend(_queue(server, queue))
    results.append(_archiver_progress(bound, server.max_incoming_wals_queue, queue, now))
    return results
