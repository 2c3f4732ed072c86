"""Every exception walq raises on purpose, in one tree, so callers decide by type.

    WalqError
    ├── ConfigError              bad configuration or command-line argument (exit 2)
    │   ├── NotOwnedError        a directory walq would delete was not created by walq
    │   └── TaskArgumentError    a task's arguments name no real server/WAL/path: touch nothing
    ├── NotFoundError            a WAL the archive does not hold (get-wal exit 1)
    ├── WalNameError             a string is not a WAL file name (also a ValueError)
    ├── AlreadyStoredError       storage's conditional write found the WAL present (store adopts it)
    ├── AlreadyDone              a fleet chain has nothing left to do (another chain settled the WAL)
    ├── TransientError           retry later: the WAL is not at fault
    │   ├── LockBusyError        another writer holds the server lock (not counted as an attempt)
    │   │   ├── LockHeldError    a busy file lock, with who holds it
    │   │   └── LockLostError    a held Redis lock expired or was taken over
    │   ├── FencedError          a stale lock holder tried to commit (the next try takes a fresh token)
    │   ├── StorageError         storage backend failed in a way that may heal
    │   ├── CryptoError          gpg failed (key, passphrase, setup): fixing the setup heals it
    │   └── PostgresError        PostgreSQL unreachable or refused a query
    └── PermanentError           retrying the same input cannot help: fail the WAL
        ├── InvalidWalError      the file is not a valid WAL for its name / cluster (to errors/)
        ├── DuplicateWalError    the archive holds a different copy of this WAL (to errors/)
        ├── IntegrityError       stored bytes do not match their checksum
        │   └── DecompressionError  compressed bytes corrupt, or expanding past what they may hold
        ├── StorageKeyError      a storage key that is not this WAL's key in this archive
        └── TransitionError      a catalog row asked to move along a transition it does not allow

``walq.archive.policy.decide`` turns a WAL's exception into what happens to it:
the transient branch (and OSError) is retried, InvalidWal/DuplicateWal go to
errors/, the rest of the permanent branch marks the WAL failed.

Messages that echo input go through ``clip``, so a 20 MB argument never becomes a
20 MB error line, log record or task result.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (put-wal's fast path)
if TYPE_CHECKING:  # for the annotation only: locks imports this module
    from walq.locks import LockHolder

MAX_MESSAGE = 800  # characters: a task refusal is stored in the result backend and logged


class WalqError(Exception):
    """Root of every error walq raises on purpose."""


class ConfigError(WalqError):
    """Configuration or argument problem; the message names the key or argument."""


class NotOwnedError(ConfigError):
    """A directory walq would delete from exists but was not created (marked) by walq."""


class TaskArgumentError(ConfigError):
    """A task was called with arguments that do not name a real server/WAL/path, or
    that storage contradicts (commit's check of the stored object).

    Nothing has been touched when this is raised; it is never retried. The message
    is bounded: it goes to the result backend and the worker log."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}…({len(message)} characters)"
        super().__init__(message)


class NotFoundError(WalqError):
    """The requested WAL is not in the archive."""


class WalNameError(WalqError, ValueError):
    """A string is not a WAL file name."""


class AlreadyStoredError(WalqError):
    """Raised by storage backends when a conditional write finds the WAL present."""


class AlreadyDone(WalqError):
    """The chain has nothing left to do (the WAL was settled by another chain)."""


class TransientError(WalqError):
    """The operation may succeed if retried later."""


class LockBusyError(TransientError):
    """Another process holds the server's lock."""


class LockHeldError(LockBusyError):
    """A busy file lock, with who holds it (``holder``)."""

    def __init__(self, holder: LockHolder) -> None:
        super().__init__(holder.describe())
        self.holder = holder


class LockLostError(LockBusyError):
    """A held Redis lock expired or was taken over; the holder must stop writing."""


class FencedError(TransientError):
    """A commit carried a fencing token older than one already seen.

    Not the WAL's fault: a holder that lost its lock was overtaken, and the next
    attempt takes a fresh token."""


class StorageError(TransientError):
    """The storage backend failed (unreachable, unwritable, throttled)."""


class CryptoError(TransientError):
    """gpg failed: unusable key, wrong passphrase, corrupt data. Fixing the setup heals it."""


class PostgresError(TransientError):
    """PostgreSQL could not be reached or refused a query (may heal)."""


class PermanentError(WalqError):
    """Retrying the same input cannot succeed."""


class InvalidWalError(PermanentError):
    """The file's content does not match what its name promises."""


class DuplicateWalError(PermanentError):
    """A different copy of this WAL is already archived."""


class IntegrityError(PermanentError):
    """Stored bytes do not match the checksum taken before compression."""


class DecompressionError(IntegrityError):
    """Compressed bytes are corrupt, or expand beyond the size they may hold."""


class StorageKeyError(PermanentError):
    """A key (from a task argument or a catalog row) is not where this WAL lives in
    this archive: absolute, '..', another WAL's, or outside the archive's tree."""


class TransitionError(PermanentError):
    """A catalog row may not move from its state to the one asked (base.TRANSITIONS)."""


ECHO_LIMIT = 80  # characters of an echoed value kept in a message


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` bounded to ``limit`` characters, with the input's size when cut.

    Used wherever a message echoes input (task arguments, config values, CLI
    arguments): the operator sees what was wrong; a huge value costs nothing."""
    if isinstance(value, str | bytes | bytearray) and len(value) > 4 * limit:
        shown = repr(value[:limit])  # never build the repr of a huge value
    else:
        shown = repr(value)
    if len(shown) <= limit:
        return shown
    size = (
        len(value.encode(errors="replace"))
        if isinstance(value, str)
        else (len(value) if isinstance(value, bytes | bytearray) else len(shown))
    )
    return f"{shown[:limit]}…({size} bytes)"
