"""Is the fleet alive? Heartbeats that workers and beat write to Redis, and the check lines.

A dead fleet looks healthy from PostgreSQL's side: put-wal keeps filling incoming/.
``archiver progress`` catches it once a file has waited ``archive_lag_maximum``;
these lines catch it as soon as the processes stop, idle PostgreSQL or not:

- every worker writes ``{"at": <Redis time>, "queues": [...]}`` into the hash
  ``walq:workers`` (field: its node name) every ``heartbeat_interval`` seconds, and
  removes its field when it stops cleanly (workers/liveness.py, a Celery bootstep);
- beat writes the Redis time into ``walq:beat:tick`` on every scheduler tick.

Times are Redis's clock (``TIME``) on both sides, so hosts with skewed clocks agree.
``walq check`` reads the two keys (no Celery import, no broadcast to the workers) and
fails ``fleet workers`` when a queue the server's chains go through has no live
consumer, and ``beat`` when no tick came within ``fleet_liveness_maximum``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from walq import keys
from walq.config import Config
from walq.masking import mask_secrets
from walq.report.progress import format_duration
from walq.report.result import CheckResult, Measure

STALE_WORKER_FIELD = 7 * 86400.0  # seconds: a writer drops fields of workers gone this long


def redis_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def record_worker(client: Any, node: str, queues: Iterable[str]) -> None:
    """A worker's heartbeat: it is alive now and consumes ``queues``."""
    value = json.dumps({"at": redis_time(client), "queues": sorted(queues)})
    client.hset(keys.WORKERS, node, value)


def forget_worker(client: Any, node: str) -> None:
    """A clean stop: the worker is gone at once, not only after the bound."""
    client.hdel(keys.WORKERS, node)


def record_beat(client: Any) -> None:
    client.set(keys.BEAT_TICK, repr(redis_time(client)))


@dataclass(frozen=True)
class WorkerBeat:
    node: str
    at: float
    queues: tuple[str, ...]


@dataclass(frozen=True)
class Liveness:
    """What Redis says about the fleet's processes, at Redis time ``now``."""

    now: float
    bound: float
    beat_at: float | None
    workers: tuple[WorkerBeat, ...] = field(default=())

    def live_workers(self) -> list[WorkerBeat]:
        return [w for w in self.workers if self.now - w.at <= self.bound]

    def consumers(self, queue: str) -> list[WorkerBeat]:
        return [w for w in self.live_workers() if queue in w.queues]

    def beat_age(self) -> float | None:
        return None if self.beat_at is None else max(self.now - self.beat_at, 0.0)


def _worker(node: str, raw: str) -> WorkerBeat | None:
    try:
        data = json.loads(raw)
        return WorkerBeat(node, float(data["at"]), tuple(str(q) for q in data["queues"]))
    except (ValueError, KeyError, TypeError):
        return None  # not ours or from a future walq: ignored, never a crash


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def read_liveness(client: Any, bound: float) -> Liveness:
    """One round trip: Redis time, beat's tick and the workers' hash."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.get(keys.BEAT_TICK)
    pipe.hgetall(keys.WORKERS)
    (seconds, micros), tick, workers = pipe.execute()
    beat_at: float | None
    try:
        beat_at = float(_text(tick)) if tick is not None else None
    except ValueError:
        beat_at = None
    found = (_worker(_text(node), _text(raw)) for node, raw in workers.items())
    return Liveness(
        float(seconds) + float(micros) / 1e6,
        bound,
        beat_at,
        tuple(sorted((w for w in found if w is not None), key=lambda w: w.node)),
    )


def fleet_liveness(config: Config) -> Liveness | str:
    """The fleet's liveness, or why Redis could not tell (a one-line, masked reason)."""
    import redis  # only fleets reach here

    url = config.effective_lock_url
    if url is None:
        return "no broker_url"
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return read_liveness(client, config.liveness_maximum)
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"cannot read Redis (lock_url): {mask_secrets(str(exc))}"


NOT_RUNNING = "is the fleet running?"


def _workers_line(live: Liveness, group: str) -> CheckResult:
    name = "fleet workers"
    alive = live.live_workers()
    idle = [q for q in (keys.group_queue(q, group) for q in keys.QUEUES) if not live.consumers(q)]
    measures = (Measure("live_workers", len(alive)),)
    if not idle:
        nodes = ", ".join(w.node for w in alive[:5]) + (", …" if len(alive) > 5 else "")
        return CheckResult(name, True, f"{len(alive)} live: {nodes}", measures=measures)
    newest = max((w.at for w in live.workers), default=None)
    seen = (
        f"last heartbeat {format_duration(live.now - newest)} ago"
        if newest is not None
        else "no worker ever seen"
    )
    detail = (
        f"no live worker consumes {', '.join(idle)} ({seen}, "
        f"maximum {format_duration(live.bound)}); {NOT_RUNNING}"
    )
    return CheckResult(name, False, detail, measures=measures)


def _beat_line(live: Liveness) -> CheckResult:
    name = "beat"
    age = live.beat_age()
    if age is None:
        return CheckResult(name, False, f"beat never ticked; {NOT_RUNNING}")
    measures = (Measure("beat_age_seconds", age, live.bound),)
    detail = f"last tick {format_duration(age)} ago, maximum {format_duration(live.bound)}"
    if age > live.bound:
        detail += f"; {NOT_RUNNING}"
    return CheckResult(name, age <= live.bound, detail, measures=measures)


def liveness_checks(live: Liveness | str, group: str = keys.DEFAULT_GROUP) -> list[CheckResult]:
    """``fleet workers`` and ``beat``: a server's chains go through every queue of its
    worker group (``worker_group``), so each needs a live consumer."""
    if isinstance(live, str):
        return [CheckResult("fleet workers", False, live), CheckResult("beat", False, live)]
    return [_workers_line(live, group), _beat_line(live)]
