"""walq's Celery tasks: validate arguments, call walq.fleet, decide retry or park.

Task names are the public surface Flower shows and applies:
``walq.scan_server``, ``walq.compress``, ``walq.encrypt``, ``walq.store``,
``walq.commit``, ``walq.retry_wal``, ``walq.retry_failed``. Task ids name the
server, the WAL and the stage, so Flower's task list reads like a WAL's history.
"""

from __future__ import annotations

import random
from typing import Any

from celery import Task, chain
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from walq import fleet
from walq.errors import LockBusyError, PermanentError
from workers.app import app, config

log = get_task_logger("walq")
_runtime: fleet.Runtime | None = None


def runtime() -> fleet.Runtime:
    global _runtime
    if _runtime is None:
        _runtime = fleet.Runtime(config)
    return _runtime


def reset_runtime() -> None:
    """Drop clients inherited across a fork; the child builds its own on first use."""
    global _runtime
    _runtime = None


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter, capped by task_retry_backoff_max."""
    ceiling = min(config.task_retry_backoff_max, config.task_retry_backoff * (2 ** retries))
    return random.uniform(ceiling / 2, ceiling)


class WalTask(Task):
    """Retries are decided by walq.fleet.is_transient and counted against task_max_retries."""

    max_retries = None  # the limit is config.task_max_retries, applied in run_stage
    acks_late = True
    reject_on_worker_lost = True


def run_stage(task: Task, fn: Any, data: Any) -> Any:
    rt = runtime()
    try:
        return fn(rt, data)
    except fleet.TaskArgumentError:
        raise  # touches nothing, never retried: the caller made the arguments up
    except fleet.AlreadyDone as exc:
        log.info("%s: %s", task.name, exc)
        raise Ignore() from None
    except LockBusyError as exc:  # contention is not failure: not counted against the limit
        raise task.retry(exc=exc, countdown=random.uniform(0.1, 1.0), max_retries=None) from None
    except Exception as exc:
        if fleet.is_transient(exc):
            attempts = task.request.retries + 1
            if task.request.retries >= config.task_max_retries:
                outcome = fleet.give_up(rt, data, exc, attempts)
                raise PermanentError(f"{outcome.name}: {outcome.message}") from None
            log.warning("%s: transient error (attempt %d): %s", task.name, attempts, exc)
            raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from None
        outcome = fleet.park(rt, data, exc)
        raise PermanentError(f"{outcome.name} {outcome.status}: {outcome.message}") from None


@app.task(name="walq.compress", bind=True, base=WalTask)
def compress(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, fleet.compress_stage, job)


@app.task(name="walq.encrypt", bind=True, base=WalTask)
def encrypt(self: Task, prepared: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, fleet.encrypt_stage, prepared)


@app.task(name="walq.store", bind=True, base=WalTask)
def store(self: Task, prepared: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, fleet.store_stage, prepared)


@app.task(name="walq.commit", bind=True, base=WalTask)
def commit(self: Task, stored: dict[str, Any]) -> dict[str, Any]:
    outcome = run_stage(self, fleet.commit_stage, stored)
    return {"wal": outcome.name, "status": outcome.status, "message": outcome.message}


def enqueue(job: dict[str, Any]) -> str:
    """One chain per WAL; ids like ``pg1.000000010000000000000003.store.1a2b3c4d``."""
    tag = f"{job['server']}.{job['wal']}"
    short = job["chain"][:8]
    steps = [
        compress.s(job).set(task_id=f"{tag}.compress.{short}"),
        encrypt.s().set(task_id=f"{tag}.encrypt.{short}"),
        store.s().set(task_id=f"{tag}.store.{short}"),
        commit.s().set(task_id=f"{tag}.commit.{short}"),
    ]
    chain(*steps).apply_async()
    return job["wal"]


@app.task(name="walq.scan_server", bind=True, base=WalTask)
def scan_server(self: Task, server: str) -> dict[str, Any]:
    jobs = run_stage(self, fleet.scan_server, server)
    return {"server": server, "enqueued": [enqueue(job) for job in jobs]}


@app.task(name="walq.retry_wal", bind=True, base=WalTask)
def retry_wal(self: Task, server: str, wal: str) -> dict[str, Any]:
    job = run_stage(self, lambda rt, _: fleet.retry_wal(rt, server, wal), None)
    return {"server": server, "wal": wal, "enqueued": [enqueue(job)] if job else []}


@app.task(name="walq.retry_failed", bind=True, base=WalTask)
def retry_failed(self: Task, server: str) -> dict[str, Any]:
    jobs = run_stage(self, lambda rt, _: fleet.retry_failed(rt, server), None)
    return {"server": server, "enqueued": [enqueue(job) for job in jobs]}
