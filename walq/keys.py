"""Every Redis key walq uses, named in one place (arq's constants.py habit).

Nothing else in walq builds a key string inline, so an operator can list,
inspect or delete walq's state with ``redis-cli --scan --pattern 'walq:*'``.
Celery's own keys (queues named in QUEUES, ``celery-task-meta-*``)
belong to kombu/Celery and are only read here.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "walq"

# Celery queues: scanning, CPU work (compress, encrypt), I/O work (store, commit).
SCAN_QUEUE = "walq.scan"
CPU_QUEUE = "walq.cpu"
IO_QUEUE = "walq.io"
QUEUES = (SCAN_QUEUE, CPU_QUEUE, IO_QUEUE)
# Which queue each task goes to (workers.app routes with it; clients sending by name too).
TASK_QUEUES = {
    "walq.scan_group": SCAN_QUEUE,  # beat's tick: its argument is a worker group, not a server
    "walq.scan_server": SCAN_QUEUE,
    "walq.retry_wal": SCAN_QUEUE,
    "walq.retry_failed": SCAN_QUEUE,
    "walq.expire_server": SCAN_QUEUE,
    "walq.compress": CPU_QUEUE,
    "walq.encrypt": CPU_QUEUE,
    "walq.store": IO_QUEUE,
    "walq.commit": IO_QUEUE,
    "walq.commit_server": IO_QUEUE,
}

DEFAULT_GROUP = "default"


def group_queue(queue: str, group: str) -> str:
    """A worker group's copy of a queue: ``walq.cpu.<group>``; the default group keeps
    the plain names (``walq.cpu``), so a fleet without groups is unchanged."""
    return queue if group == DEFAULT_GROUP else f"{queue}.{group}"


def group_queues(groups: Iterable[str]) -> tuple[str, ...]:
    """Every queue of these worker groups (what workers.app declares, status counts)."""
    return tuple(group_queue(q, g) for g in sorted(set(groups)) for q in QUEUES)


# kombu's priority sub-queues are named "<queue>\x06\x16<priority>".
KOMBU_PRIORITY_SEP = "\x06\x16"


def lock(server: str, purpose: str) -> str:
    """The lock key: its value names the holder (host:pid:uuid)."""
    return f"{PREFIX}:lock:{server}:{purpose}"


def fence(server: str, purpose: str) -> str:
    """The highest fencing token handed out for this lock (grows only)."""
    return f"{PREFIX}:fence:{server}:{purpose}"


# Fleet liveness (walq.fleet.liveness): beat's last tick, and a hash of live workers
# (field: the worker's node name; value: JSON {"at": Redis time, "queues": [...]}).
BEAT_TICK = f"{PREFIX}:beat:tick"
WORKERS = f"{PREFIX}:workers"
# Task outcomes per stage (walq.fleet.outcomes): a hash of counters, field OUTCOME_FIELD.
OUTCOMES = f"{PREFIX}:outcomes"
OUTCOME_SEP = "|"  # not allowed in a server name, a stage or an outcome


def outcome_field(server: str, stage: str, outcome: str) -> str:
    return OUTCOME_SEP.join((server, stage, outcome))


def lock_waiters(server: str, purpose: str) -> str:
    """Set (for one lock TTL) while a worker waits for the lock: its release wakes one."""
    return f"{PREFIX}:lockwait:{server}:{purpose}"


def lock_wakeup(server: str, purpose: str) -> str:
    """The list a release pushes to and waiters BLPOP on (at most one entry)."""
    return f"{PREFIX}:lockwake:{server}:{purpose}"


def commit_requested(server: str, later: bool = False) -> str:
    """Set while a group commit of the server is queued (cleared when it starts); with
    ``later``, while a delayed look at held-back WALs is pending (expires when it is due)."""
    return f"{PREFIX}:{'commitlater' if later else 'commitreq'}:{server}"
