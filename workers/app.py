"""The Celery app, built from walq's config: queues, routing, reliability, beat.

- JSON only, for tasks, results and events: task arguments are names and paths an operator can
  read in Flower, and nothing a worker receives can execute code.
- ``acks_late`` + ``task_reject_on_worker_lost``: a killed pool process's message goes
  back to the queue (the worker's main process re-sends it from memory); prefetch 1 so
  one slow WAL never hides others behind it.
- kombu's ack emulation is off (``ack_emulation: False``): a delivered message lives
  only in the consuming worker's memory, not in Redis's ``unacked`` hash, so a Celery
  message costs 2 Redis commands (LPUSH, BRPOP) instead of 10 (no MULTI ZADD HSET EXEC
  record, no MULTI ZREM HDEL EXEC ack). A worker that shuts down still re-queues what it holds
  (kombu restores a channel's unacknowledged messages when it closes). What a kill -9 of the whole worker (or a Redis restarted empty) loses is
  brought back by the catalog, as it was before (kombu would have restored it only
  after a visibility timeout of at least an hour): a claim whose deadline passed is
  re-driven by the next scan, a stored WAL whose commit is overdue gets a new commit.
- Results are ignored and task events are off unless ``task_events = true``: the
  control plane per WAL is the messages themselves (tests/test_control_plane.py).
- Three queues so pools are sized per kind of work: ``walq.scan``, ``walq.cpu``
  (compress, encrypt: prefork) and ``walq.io`` (store, commit: threads/gevent); per
  worker group (a server's ``worker_group``) as ``walq.cpu.<group>`` etc., the
  ``default`` group keeping the plain names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from celery import Celery
from kombu import Queue

from walq import keys
from walq.config import Config, load_config
from walq.errors import WalqError
from workers import liveness

ROUTES = keys.TASK_QUEUES


def groups(config: Config) -> list[str]:
    """The worker groups the configured servers name (``default`` always among them)."""
    return sorted(config.worker_groups())


def server_queue(config: Config, task: str, server: object) -> str | None:
    """The queue of ``task`` for ``server``'s worker group; None for a task walq does not route."""
    queue = keys.TASK_QUEUES.get(task)
    if queue is None:
        return None
    found = config.servers.get(server) if isinstance(server, str) else None
    return keys.group_queue(queue, found.worker_group if found else keys.DEFAULT_GROUP)


def router(config: Config) -> Callable[..., dict[str, str] | None]:
    """Route each walq task to its server's group: the server is the first argument, or
    the ``server`` of the job a stage takes (an unknown server goes to the default group,
    whose task then refuses it in one line)."""

    def route(
        name: str, args: tuple, kwargs: dict, options: dict, task: object = None, **kw: object
    ) -> dict[str, str] | None:
        first = args[0] if args else kwargs.get("server", kwargs.get("job"))
        if name == "walq.scan_group":  # a group's tick: that group's own scan queue
            group = first if isinstance(first, str) else kwargs.get("group")
            if not (isinstance(group, str) and group in groups(config)):
                group = keys.DEFAULT_GROUP  # whose task then refuses it in one line
            return {"queue": keys.group_queue(keys.SCAN_QUEUE, group)}
        server = first.get("server") if isinstance(first, dict) else first
        queue = server_queue(config, name, server)
        return {"queue": queue} if queue else None

    return route


def scan_expiry(config: Config) -> float:
    """A scan message older than this is dropped: a newer tick has been sent since."""
    return max(2 * config.scan_interval, 5.0)


def beat_schedule(config: Config) -> dict[str, dict[str, object]]:
    """walq.scan_group for every worker group every scan_interval seconds (it sends
    walq.scan_server only for the group's servers with something to do: an idle server
    costs no message); walq.expire_server every expire_interval seconds for servers with
    a retention_policy; stale ticks expire."""
    schedule: dict[str, dict[str, object]] = {
        f"scan group {group}": {
            "task": "walq.scan_group",
            "schedule": config.scan_interval,
            "args": (group,),
            "options": {
                "expires": scan_expiry(config),
                "queue": keys.group_queue(keys.SCAN_QUEUE, group),
            },
        }
        for group in sorted({s.worker_group for s in config.servers.values()})
    }
    schedule.update(
        {
            f"expire {name}": {
                "task": "walq.expire_server",
                "schedule": config.expire_interval,
                "args": (name,),
                "options": {
                    "expires": max(config.expire_interval, 5.0),
                    "queue": server_queue(config, "walq.expire_server", name),
                },
            }
            for name, server in sorted(config.servers.items())
            if server.retention_policy
        }
    )
    return schedule


def make_app(config: Config) -> Celery:
    if not config.broker_url:
        raise SystemExit(
            "walq: broker_url is not set in the config; the fleet needs a Redis broker"
        )
    if not config.catalog_url:
        # SQLite is embedded mode's catalog: one connection per process, and the io worker's
        # threads would share it (its stores and commits would fail, WAL after WAL).
        raise SystemExit(
            "walq: catalog_url is not set in the config; the fleet needs a PostgreSQL catalog"
        )
    celery = Celery(
        "walq", broker=config.broker_url, backend=config.broker_url, include=["workers.tasks"]
    )
    # No ack emulation: 2 Redis commands per message instead of 10 (see the docstring).
    transport = {"ack_emulation": False}
    heartbeat_step, scheduler = liveness.for_config(config)
    celery.steps["consumer"].add(heartbeat_step)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_queues=[Queue(q) for q in keys.group_queues(groups(config))],
        task_default_queue=keys.SCAN_QUEUE,
        task_routes=(router(config),),
        # No result backend writes: nothing reads walq's task results (`walq status` reads the
        # catalog; the chain passes each stage's result in the next message).
        # A failure (a refused argument, a parked WAL) is still stored for the caller:
        # rare, and what an operator applying a task by name through Flower reads.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=True,
        task_track_started=False,
        result_expires=3600,
        # Task events only when asked (task_events = true), or while Flower runs: Flower
        # broadcasts enable_events to the workers.
        task_send_sent_event=config.task_events,
        worker_send_task_events=config.task_events,
        beat_schedule=beat_schedule(config),
        beat_scheduler=scheduler,  # ticks at least every heartbeat_interval (workers.liveness)
        timezone="UTC",
    )
    return celery


def refuse_flower_without_auth() -> None:
    """Our configs never run Flower open: it can apply tasks over HTTP."""
    argv = sys.argv[1:]
    if "flower" in argv and not (
        os.environ.get("FLOWER_BASIC_AUTH")
        or any(a.startswith("--basic-auth") or a.startswith("--auth") for a in argv)
    ):
        raise SystemExit(
            "walq: refusing to start Flower without authentication (set FLOWER_BASIC_AUTH=user:password)"
        )


def _load() -> Config:
    try:
        return load_config()
    except WalqError as exc:  # one line, like the walq CLI, not a traceback from an import
        raise SystemExit(f"walq: {exc}") from None


config = _load()
app = make_app(config)
