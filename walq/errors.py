"""One exception tree for walq, so callers (CLI, Celery tasks) decide by type.

    WalqError
    ├── ConfigError            bad configuration or command-line argument (exit 2)
    ├── NotFoundError          a WAL the archive does not hold (get-wal exit 1)
    ├── TransientError         retry later: storage unreachable, lock busy, I/O hiccup
    │   ├── LockBusyError      another writer holds the server lock
    │   └── StorageError       storage backend failed in a way that may heal
    └── PermanentError         retrying the same input cannot help: park the WAL
        ├── InvalidWalError    the file is not a valid WAL for its name / cluster
        ├── DuplicateWalError  the archive holds a different copy of this WAL
        ├── FencedError        a stale lock holder tried to commit
        ├── IntegrityError     stored bytes do not match their checksum
        ├── StorageKeyError    a storage key that is not this WAL's key in this archive
        └── TransitionError    a catalog row asked to move along a transition it does not allow

Messages that echo input go through ``clip``, so a 20 MB argument never becomes a
20 MB error line, log record or task result.
"""

from __future__ import annotations


class WalqError(Exception):
    """Root of every error walq raises on purpose."""


class ConfigError(WalqError):
    """Configuration or argument problem; the message names the key or argument."""


class NotFoundError(WalqError):
    """The requested WAL is not in the archive."""


class TransientError(WalqError):
    """The operation may succeed if retried later."""


class LockBusyError(TransientError):
    """Another process holds the server's lock."""


class StorageError(TransientError):
    """The storage backend failed (unreachable, unwritable, throttled)."""


class PermanentError(WalqError):
    """Retrying the same input cannot succeed."""


class InvalidWalError(PermanentError):
    """The file's content does not match what its name promises."""


class DuplicateWalError(PermanentError):
    """A different copy of this WAL is already archived."""


class FencedError(PermanentError):
    """A commit carried a fencing token older than one already seen."""


class IntegrityError(PermanentError):
    """Stored bytes do not match the checksum taken before compression."""


class StorageKeyError(PermanentError):
    """A key (from a task argument or a catalog row) is not where this WAL lives in
    this archive: absolute, '..', another WAL's, or outside the archive's tree."""


class TransitionError(PermanentError):
    """A catalog row may not move from its state to the one asked (base.TRANSITIONS)."""


class AlreadyStoredError(WalqError):
    """Raised by storage backends when a conditional write finds the WAL present."""


ECHO_LIMIT = 80  # characters of an echoed value kept in a message


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` bounded to ``limit`` characters, with the input's size when cut.

    Used wherever a message echoes input (task arguments, config values, CLI
    arguments): the operator sees what was wrong; a huge value costs nothing."""
    if isinstance(value, str | bytes | bytearray) and len(value) > 4 * limit:
        shown = repr(value[: limit])  # never build the repr of a huge value
    else:
        shown = repr(value)
    if len(shown) <= limit:
        return shown
    size = len(value.encode(errors="replace")) if isinstance(value, str) else (
        len(value) if isinstance(value, bytes | bytearray) else len(shown))
    return f"{shown[:limit]}…({size} bytes)"
