"""Timestamps in walq's ``--json`` documents: ISO 8601 in UTC, with the offset.

Inside walq a moment is epoch seconds (a float: what the catalog stores and what
arithmetic wants); a reader of ``walq status --json`` or ``walq list --json``
should not have to guess the epoch or the time zone, so every timestamp is
turned into ``2026-11-30T09:14:21.123456+00:00`` (Python's ``fromisoformat``,
``jq``'s ``fromdateiso8601`` after trimming the fraction, PostgreSQL's
``timestamptz`` all read it) when the document is printed. Durations stay
numbers of seconds (``lag_seconds``, ``since_s``).
"""

from __future__ import annotations

from datetime import UTC, datetime

# Every key of a --json document that holds a moment (epoch seconds until printed).
TIMESTAMP_KEYS = frozenset(
    {
        "archived_at",
        "claimed_at",
        "deadline",
        "expired_at",
        "last_archived_at",
        "last_exit_at",
        "mtime",
        "oldest_waiting_since",
        "started_at",
        "time",
    }
)


def iso_utc(epoch: float) -> str:
    """``epoch`` seconds as ISO 8601 in UTC with its offset (``…+00:00``)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def with_iso_times(document: object) -> object:
    """A copy of ``document`` whose TIMESTAMP_KEYS values (numbers) are ISO 8601 strings."""
    if isinstance(document, dict):
        return {
            key: iso_utc(value)
            if key in TIMESTAMP_KEYS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            else with_iso_times(value)
            for key, value in document.items()
        }
    if isinstance(document, list | tuple):
        return [with_iso_times(item) for item in document]
    return document
