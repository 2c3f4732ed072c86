"""Task outcomes per stage: one Redis counter per (server, stage, outcome), for metrics.

The worker adds one after each stage run (workers.tasks.run_stage): a single HINCRBY
on walq's Redis, never on the WAL's path to storage (an error here is logged and
dropped). ``walq metrics`` reads the whole hash in one HGETALL and exposes it as the
counter ``walq_task_outcomes_total``. The hash lives as long as Redis's memory does:
a restarted Redis starts the counters at zero, which Prometheus' ``rate()`` reads as
a counter reset.
"""

from __future__ import annotations

from typing import Any

from walq import keys

# ok: the stage did its work; retry: a transient error, retried with backoff; wait:
# contention (the commit lock), retried at once; skipped: nothing to do (superseded,
# done by another chain); failed: the WAL was parked or given up; refused: bad arguments.
OUTCOMES = ("ok", "retry", "wait", "skipped", "failed", "refused")


def record_outcome(client: Any, server: str, stage: str, outcome: str) -> None:
    client.hincrby(keys.OUTCOMES, keys.outcome_field(server, stage, outcome), 1)


def read_outcomes(client: Any) -> dict[tuple[str, str, str], int]:
    """(server, stage, outcome) -> count; fields that are not ours are ignored."""
    found: dict[tuple[str, str, str], int] = {}
    for raw_field, raw_count in client.hgetall(keys.OUTCOMES).items():
        text = raw_field.decode(errors="replace") if isinstance(raw_field, bytes) else raw_field
        parts = text.split(keys.OUTCOME_SEP)
        if len(parts) != 3:
            continue
        try:
            found[(parts[0], parts[1], parts[2])] = int(raw_count)
        except ValueError:
            continue
    return found
