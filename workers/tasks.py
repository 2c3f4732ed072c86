"""walq's Celery tasks: call walq.fleet.stages, apply walq.archive.policy's verdict.

Task names are the public surface Flower shows and applies:
``walq.scan_group`` (beat's tick), ``walq.scan_server``, ``walq.compress``, ``walq.encrypt``, ``walq.store``,
``walq.commit_server`` (the group commit), ``walq.commit`` (one WAL's commit), ``walq.retry_wal``, ``walq.retry_failed``, ``walq.expire_server``. Task ids name the
server, the WAL and the stage, so Flower's task list reads like a WAL's history.
"""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

from celery import Task, chain
from celery.exceptions import Ignore
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger

from walq.archive.policy import Verdict, decide
from walq.errors import PermanentError
from walq.fleet import commit as group_commit
from walq.fleet import stages
from walq.fleet.expire import expire_task
from walq.fleet.outcomes import record_outcome
from walq.fleet.runtime import Runtime, preload
from walq.fleet.tick import servers_to_scan
from workers.app import app, config, scan_expiry, server_queue

log = get_task_logger("walq")
_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's clients; one Runtime even when threads (scans, stores) ask at once."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime(config)
    return _runtime


@worker_init.connect
def preload_modules(**_: object) -> None:
    """In the worker's parent, before the pool forks: the catalog, Redis, codec and
    checksum modules every child's first stage would import on its own."""
    preload(config)


@worker_process_init.connect
def reset_runtime(**_: object) -> None:
    """After the prefork fork: never reuse the parent's sockets (catalog pool, Redis);
    the child builds its own clients on first use."""
    global _runtime
    _runtime = None


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter, capped by task_retry_backoff_max."""
    ceiling = min(config.task_retry_backoff_max, config.task_retry_backoff * (2**retries))
    return random.uniform(ceiling / 2, ceiling)


class WalTask(Task):
    """Retries are decided by walq.archive.policy and counted against task_max_retries."""

    max_retries = None  # the limit is config.task_max_retries, applied in run_stage
    acks_late = True
    reject_on_worker_lost = True


def count(rt: Runtime, task: Task, server: object, outcome: str) -> None:
    """One more ``outcome`` for this stage (walq.fleet.outcomes); never fails the task."""
    if rt.redis is None:
        return
    if not (isinstance(server, str) and server in config.servers):
        server = "(unknown)"  # a made-up name from Flower must not become a new counter
    try:
        record_outcome(rt.redis, server, task.name.removeprefix("walq."), outcome)
    except Exception as exc:  # metrics are not worth a WAL's retry
        log.warning("outcome not counted: %s", type(exc).__name__)


def run_stage(task: Task, fn: Any, data: Any, server: object = None) -> Any:
    rt = runtime()
    server = data.get("server") if isinstance(data, dict) else server
    try:
        result = fn(rt, data)
    except Exception as exc:
        verdict = decide(exc)
        outcome = {
            Verdict.REFUSE: "refused",
            Verdict.DONE: "skipped",
            Verdict.WAIT: "wait",
            Verdict.RETRY: "retry",
        }.get(verdict, "failed")
        if verdict is Verdict.RETRY and task.request.retries >= config.task_max_retries:
            outcome = "failed"
        count(rt, task, server, outcome)
        if verdict is Verdict.REFUSE:
            raise  # touches nothing, never retried: the caller made the arguments up
        if verdict is Verdict.DONE:
            log.info("%s: %s", task.name, exc)
            forget_retries(task)
            raise Ignore() from None
        if verdict is Verdict.WAIT:  # contention is not failure: not counted against the limit
            raise task.retry(
                exc=exc, countdown=random.uniform(0.1, 1.0), max_retries=None
            ) from None
        if verdict is Verdict.RETRY:
            attempts = task.request.retries + 1
            if task.request.retries >= config.task_max_retries:
                given_up = stages.give_up(rt, data, exc, attempts)
                raise PermanentError(f"{given_up.name}: {given_up.message}") from None
            log.warning("%s: transient error (attempt %d): %s", task.name, attempts, exc)
            raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from None
        parked = stages.park(rt, data, exc)
        raise PermanentError(f"{parked.name} {parked.status}: {parked.message}") from None
    count(rt, task, server, "ok")
    forget_retries(task)
    return result


def forget_retries(task: Task) -> None:
    """A retried run stored a RETRY result (``task_store_errors_even_if_ignored``); once the
    task settles without failing, drop it, so no result key outlives its WAL (one DEL,
    only after a retry)."""
    if task.request.retries:
        task.backend.forget(task.request.id)


@app.task(name="walq.compress", bind=True, base=WalTask)
def compress(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, stages.compress_stage, job)


@app.task(name="walq.encrypt", bind=True, base=WalTask)
def encrypt(self: Task, prepared: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, stages.encrypt_stage, prepared)


@app.task(name="walq.store", bind=True, base=WalTask)
def store(self: Task, prepared: dict[str, Any]) -> dict[str, Any]:
    """Store, mark stored, and ask for the server's group commit (one queued per server);
    a copy of an already-archived WAL goes to the per-WAL commit, which settles it."""
    stored = run_stage(self, stages.store_and_mark_stage, prepared)
    server, short = stored["server"], stored["chain"][:8]
    if stored.get("already_archived"):
        commit.apply_async(
            (stored,),
            task_id=f"{server}.{stored['wal']}.commit.{short}",
            queue=server_queue(config, "walq.commit", server),
        )
    else:
        ask_commit(server, group_commit.COMMIT_DELAY)
    return {"server": server, "wal": stored["wal"]}


def ask_commit(server: str, countdown: float, *, held: bool = False) -> None:
    """Enqueue the server's group commit in ``countdown`` seconds unless one is already
    queued. A look at WALs held back (``held``) has a flag of its own: it must not stop
    a store that completes meanwhile from asking for a commit."""
    if not group_commit.request_commit(runtime(), server, later=countdown if held else None):
        return
    commit_server.apply_async(
        (server,),
        task_id=f"{server}.commit.{uuid.uuid4().hex[:8]}",
        queue=server_queue(config, "walq.commit_server", server),
        countdown=countdown,
    )


@app.task(name="walq.commit_server", bind=True, base=WalTask)
def commit_server(self: Task, server: str) -> dict[str, Any]:
    """Commit every stored WAL of the server in WAL order (walq.fleet.commit)."""
    batch = run_stage(self, lambda rt, _: group_commit.commit_server(rt, server), None, server)
    if batch.again_in is not None:  # held back behind an earlier WAL: look again then
        ask_commit(server, batch.again_in, held=True)
    return {"server": server, "committed": len(batch.committed), "held": batch.held}


@app.task(name="walq.commit", bind=True, base=WalTask)
def commit(self: Task, stored: dict[str, Any]) -> dict[str, Any]:
    outcome = run_stage(self, stages.commit_stage, stored)
    return {"wal": outcome.name, "status": outcome.status, "message": outcome.message}


def enqueue(job: dict[str, Any]) -> str:
    """One chain per WAL: compress → [encrypt] → store → commit, the encrypt hop only for
    a server that encrypts; ids like ``pg1.000000010000000000000003.store.1a2b3c4d``."""
    tag = f"{job['server']}.{job['wal']}"
    short = job["chain"][:8]

    def step(task: Task, *args: Any) -> Any:  # this server's group's queue, named up front
        queue = server_queue(config, task.name, job["server"])
        return task.s(*args).set(task_id=f"{tag}.{task.name[5:]}.{short}", queue=queue)

    steps = [step(compress, job)]
    if config.server(job["server"]).encryption != "none":
        steps.append(step(encrypt))
    steps.append(step(store))  # store asks for the server's group commit
    chain(*steps).apply_async()
    return job["wal"]


@app.task(name="walq.scan_server", bind=True, base=WalTask)
def scan_server(self: Task, server: str) -> dict[str, Any]:
    def overdue() -> None:
        ask_commit(server, 0.0)

    jobs = run_stage(self, lambda rt, name: stages.scan_server(rt, name, overdue), server, server)
    return {"server": server, "enqueued": [enqueue(job) for job in jobs]}


# Beat's tick carries ``expires``: a stale one is revoked, and a stored REVOKED result
# would outlive it by result_expires, so its failures are only logged. (scan_server keeps
# storing failures: an operator applying it by name reads its refusal there.)
@app.task(name="walq.scan_group", bind=True, acks_late=False, store_errors_even_if_ignored=False)
def scan_group(self: Task, group: str) -> dict[str, Any]:
    """Beat's tick for a worker group: walq.scan_server for each of its servers with
    something to do (walq.fleet.tick); an idle server costs a few directory reads here.
    Not acked late: a lost tick is replaced by the next one."""
    tick = servers_to_scan(runtime(), group)
    for server in tick.scan:
        scan_server.apply_async(
            (server,),
            task_id=f"{server}.scan.{uuid.uuid4().hex[:8]}",
            queue=server_queue(config, "walq.scan_server", server),
            expires=scan_expiry(config),
        )
    return {"group": group, "scanned": tick.scan, "idle": tick.idle, "failed": tick.failed}


@app.task(name="walq.retry_wal", bind=True, base=WalTask)
def retry_wal(self: Task, server: str, wal: str) -> dict[str, Any]:
    job = run_stage(self, lambda rt, _: stages.retry_wal(rt, server, wal), None, server)
    return {"server": server, "wal": wal, "enqueued": [enqueue(job)] if job else []}


@app.task(name="walq.retry_failed", bind=True, base=WalTask)
def retry_failed(self: Task, server: str) -> dict[str, Any]:
    jobs = run_stage(self, lambda rt, _: stages.retry_failed(rt, server), None, server)
    return {"server": server, "enqueued": [enqueue(job) for job in jobs]}


@app.task(name="walq.expire_server", bind=True, ignore_result=False)
def expire_server(self: Task, server: str) -> dict[str, Any]:
    """Apply the server's retention_policy under its fenced commit lock (walq.fleet.expire).
    Its result is kept (one per server per expire_interval, not per WAL): what an operator
    applying it through Flower, or a test, reads (deleted, held back, refused)."""
    return expire_task(config, server)
