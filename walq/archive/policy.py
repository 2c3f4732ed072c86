"""The one failure policy: what happens to a WAL whose step raised.

``decide`` reads the exception's place in the tree (walq/errors.py);
``settle_failure`` applies a verdict to the WAL. The embedded archiver and the
fleet's tasks both use them; they differ only in what RETRY means (embedded:
release the claim, the next run retries; fleet: a Celery retry with backoff,
then FAIL "gave up after N attempts") and in scope: embedded hands the policy
only a WAL's own failures (transient, permanent, OSError) and lets a broken
setup or a bug stop the run an operator is watching, while a fleet task
settles whatever its stage raised.
"""

from __future__ import annotations

import enum
from pathlib import Path

from walq.archive.job import WalJob
from walq.archive.scan import move_to_errors
from walq.archive.steps import Outcome
from walq.catalog.base import Catalog
from walq.config import ServerConfig
from walq.errors import (
    AlreadyDone,
    DuplicateWalError,
    InvalidWalError,
    LockBusyError,
    PermanentError,
    TaskArgumentError,
    TransientError,
    WalqError,
)


class Verdict(enum.Enum):
    DONE = "done"  # nothing left to do: another chain settled the WAL
    REFUSE = "refuse"  # made-up task arguments: raise, nothing touched, never retried
    WAIT = "wait"  # lock contention: try again, not counted as an attempt
    RETRY = "retry"  # not the WAL's fault: try again later
    REJECT = "reject"  # bad content: move the file to errors/ and mark the WAL failed
    FAIL = "fail"  # retrying cannot help: mark the WAL failed, leave the file


WALS_OWN_FAILURES = (
    TransientError,
    PermanentError,
    OSError,
)  # what the embedded run settles per WAL


def decide(exc: BaseException) -> Verdict:
    """The verdict for an exception, by its type."""
    if isinstance(exc, AlreadyDone):
        return Verdict.DONE
    if isinstance(exc, TaskArgumentError):
        return Verdict.REFUSE
    if isinstance(exc, LockBusyError):
        return Verdict.WAIT
    if isinstance(exc, (TransientError, OSError)) or not isinstance(exc, WalqError):
        return Verdict.RETRY  # an exception walq did not raise on purpose may heal too
    if isinstance(exc, (InvalidWalError, DuplicateWalError)):
        return Verdict.REJECT
    return Verdict.FAIL


def errors_suffix(exc: BaseException) -> str:
    """The suffix a rejected file gets in errors/."""
    return "duplicate" if isinstance(exc, DuplicateWalError) else "error"


def settle_failure(
    catalog: Catalog, server: ServerConfig, job: WalJob, exc: BaseException
) -> Outcome:
    """Apply ``decide(exc)`` to the WAL: release, reject to errors/, or mark failed."""
    verdict = decide(exc)
    if verdict in (Verdict.RETRY, Verdict.WAIT):
        catalog.release(server.name, job.wal, str(exc))
        return Outcome(job.wal, "failed", f"{exc} (left in place; retried on the next run)")
    if verdict is Verdict.REJECT:
        return reject(catalog, server, job.wal, job.source, str(exc), errors_suffix(exc))
    if verdict is Verdict.FAIL:
        catalog.mark_failed(server.name, job.wal, str(exc), job.source)
        return Outcome(job.wal, "failed", str(exc))
    raise exc  # DONE and REFUSE touch nothing


def give_up(exc: BaseException, attempts: int) -> PermanentError:
    """A transient error that outlasted every retry, as the failure it becomes."""
    return PermanentError(f"gave up after {attempts} attempts: {exc}")


def reject(
    catalog: Catalog,
    server: ServerConfig,
    name: str,
    source: str,
    reason: str,
    suffix: str = "error",
) -> Outcome:
    """Park a bad file in errors/ and the catalog; nothing else is touched."""
    src = Path(source)
    target = None
    if src.exists() or src.is_symlink():
        target = move_to_errors(src, server.errors_dir, suffix)
    catalog.mark_failed(server.name, name, reason, str(target) if target else source)
    where = f"; moved to {target}" if target else ""
    return Outcome(name, "rejected", f"{reason}{where}")
