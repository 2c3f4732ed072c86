"""Heartbeats for ``walq check`` (walq.fleet.liveness): workers and beat say they are alive.

- ``WorkerHeartbeat``, a consumer bootstep: once the task consumer runs, it writes
  the worker's node name and the queues it consumes every ``heartbeat_interval``
  seconds on the consumer's timer, and removes them at a clean shutdown. A worker
  killed outright simply stops writing; its entry goes stale after the bound.
- ``TickingScheduler``, beat's scheduler: beat's loop sleeps until the next due
  entry; this one wakes at least every ``heartbeat_interval`` and writes the tick.

Both write to the lock_url Redis (walq's own keys), never through the broker's queues,
and a Redis error is logged and retried on the next beat: it never stops a worker or beat.
"""

from __future__ import annotations

import time
from typing import Any

from celery import bootsteps
from celery.beat import PersistentScheduler
from celery.utils.log import get_logger

from walq.config import Config
from walq.fleet.liveness import forget_worker, record_beat, record_worker

log = get_logger("walq.liveness")


def _client(config: Config) -> Any:
    import redis

    return redis.Redis.from_url(
        config.effective_lock_url or "", socket_timeout=5, socket_connect_timeout=5
    )


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Registered on the consumer blueprint by workers.app.make_app (``for_config``)."""

    config: Config
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.client: Any = None
        self.timer_ref: Any = None

    def _queues(self, c: Any) -> list[str]:
        consumer = getattr(c, "task_consumer", None)
        if consumer is not None:
            return [q.name for q in consumer.queues]
        return list(c.app.amqp.queues.consume_from or ())

    def _beat(self, c: Any) -> None:
        try:
            if self.client is None:
                self.client = _client(self.config)
            record_worker(self.client, c.hostname, self._queues(c))
        except Exception as exc:  # Redis down: say so, try again next time
            log.warning("walq: worker heartbeat not written: %s", type(exc).__name__)
            self.client = None

    def start(self, c: Any) -> None:
        self._beat(c)
        self.timer_ref = c.timer.call_repeatedly(self.config.heartbeat_interval, self._beat, (c,))

    def stop(self, c: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        try:
            forget_worker(self.client or _client(self.config), c.hostname)
        except Exception as exc:
            log.warning("walq: worker heartbeat not removed: %s", type(exc).__name__)


class TickingScheduler(PersistentScheduler):
    """beat's scheduler (``beat_scheduler`` in workers.app): a tick at least every
    ``heartbeat_interval``, each written to Redis (at most once per interval)."""

    config: Config
    _client: Any = None
    _written = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        delay = super().tick(*args, **kwargs)
        now = time.monotonic()
        interval = self.config.heartbeat_interval
        if now - self._written >= interval / 2:
            try:
                if self._client is None:
                    self._client = _client(self.config)
                record_beat(self._client)
                self._written = now
            except Exception as exc:
                log.warning("walq: beat tick not written: %s", type(exc).__name__)
                self._client = None
        return min(delay, interval)


def for_config(config: Config) -> tuple[type[WorkerHeartbeat], type[TickingScheduler]]:
    """The two classes bound to one walq config (the app is built from it)."""
    step = type("WorkerHeartbeat", (WorkerHeartbeat,), {"config": config})
    scheduler = type("TickingScheduler", (TickingScheduler,), {"config": config})
    return step, scheduler
