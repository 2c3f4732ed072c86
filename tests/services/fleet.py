"""Real fleet parts for tests: a private redis-server, a throwaway catalog database,
Celery worker / beat / Flower processes started as subprocesses.

Each helper waits for readiness on a condition with a deadline and is stopped
(by its own pid) at teardown. A private redis-server keeps the shared one on
6379 untouched, and lets the Redis-restart test kill and restart it at will.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from tests.services.homes import xlogdb_names
from tests.services.pg import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CELERY = VENV_BIN / "celery"
ADMIN_URL = os.environ.get("WALQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class RedisServer:
    """A redis-server of our own, without persistence (like the machines' Redis)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 30, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # no persistence: nothing to flush, a crash is the point
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def catalog_db() -> Iterator[str]:
    """A throwaway PostgreSQL database ``walq_test_<random>``, dropped at the end."""
    name = f"walq_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_schema_url(catalog_db: str) -> str:
    """A private schema inside the session database (search_path), for test isolation."""
    schema = f"s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(catalog_db, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{catalog_db}?options=-csearch_path%3D{schema}"


@dataclass
class Proc:
    """One fleet process (worker, beat or flower) and its log."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Fleet:
    """Starts celery processes against one walq config; stops them all at teardown."""

    config_path: Path
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "WALQ_CONFIG": str(self.config_path),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        env.update(extra or {})
        return env

    def _spawn(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> Proc:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - owned by the child
        popen = subprocess.Popen(
            [str(CELERY), "-A", "workers", *args],
            cwd=REPO,
            env=self._env(extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        queues: str = "walq.scan,walq.cpu,walq.io",
        extra: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Proc:
        proc = self._spawn(name, worker_args(name, pool, concurrency, queues), extra)
        if wait:
            wait_for(
                lambda: proc_ready(proc),
                90,
                f"worker {name} to be ready:\n{proc.output()[-2000:]}",
                0.2,
            )
        return proc

    def beat(self, name: str = "beat") -> Proc:
        schedule = self.logdir / f"{name}-schedule"
        proc = self._spawn(name, ["beat", "--loglevel", "INFO", "-s", str(schedule)])
        wait_for(
            lambda: "beat: Starting" in proc.output() or not proc.alive(),
            60,
            f"{name} to start",
            0.2,
        )
        assert proc.alive(), proc.output()
        return proc

    def flower(self, port: int, basic_auth: str) -> Proc:
        proc = self._spawn(
            "flower",
            ["flower", f"--port={port}", "--address=127.0.0.1"],
            {"FLOWER_BASIC_AUTH": basic_auth},
        )
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, grace: float = 20) -> None:
        if proc.alive():
            try:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, sig)
                proc.popen.wait(timeout=grace)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=30)
        else:  # the pool children of a dead worker: its process group, by id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    def logs(self, tail: int = 6000) -> str:
        """Every process's log (the last ``tail`` characters of each; 0 for all of it)."""
        return "\n".join(
            f"===== {p.name}\n{p.output()[-tail:] if tail else p.output()}" for p in self.procs
        )


def worker_args(name: str, pool: str, concurrency: int, queues: str) -> list[str]:
    """``celery -A workers`` arguments for one test worker (node ``name@%h``)."""
    return [
        "worker",
        "-n",
        f"{name}@%h",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-Q",
        queues,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def proc_ready(proc: Proc) -> bool:
    if not proc.alive():
        raise AssertionError(f"{proc.name} exited:\n{proc.output()[-4000:]}")
    return " ready." in proc.output()


def which_celery() -> str:
    found = shutil.which("celery", path=str(VENV_BIN))
    assert found, "celery is not installed in the virtualenv"
    return found


# -- a walq home wired for the fleet ------------------------------------------------------

FAST = {
    "scan_interval": 1.0,
    "claim_timeout": 60.0,
    "lock_ttl": 3.0,
    "task_max_retries": 3,
    "task_retry_backoff": 0.2,
    "task_retry_backoff_max": 1.0,
}


def fleet_settings(redis_url: str, catalog_url: str, **overrides: object) -> dict[str, object]:
    """Top-level config keys for a test fleet: private Redis, private catalog schema, short timers."""
    return {
        "broker_url": f"{redis_url}/0",
        "lock_url": f"{redis_url}/1",
        "catalog_url": catalog_url,
        **FAST,
        **overrides,
    }


@pytest.fixture
def fleet_home(make_home, redis_server, catalog_db):
    """Factory: a walq home in fleet mode (session Redis, a fresh catalog schema, short timers),
    with optional server settings and top-level overrides."""

    def make(servers: dict[str, dict[str, object]] | None = None, **overrides: object):
        return make_home(
            servers, **fleet_settings(redis_server.url, fresh_schema_url(catalog_db), **overrides)
        )

    return make


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator:
    """Factory: a Fleet for a config file; every process it started is stopped at teardown."""
    fleets: list[Fleet] = []

    def make(config_path: Path, **env: str) -> Fleet:
        fleet = Fleet(config_path, tmp_path / f"logs{len(fleets)}", dict(env))
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop_all()


def stored_names(wals_dir: Path) -> list[str]:
    """WAL payloads in a Barman wals/ directory (hash dirs and history files)."""
    names = []
    for path in wals_dir.rglob("*"):
        if path.is_file() and ".walq-tmp" not in path.parts and not path.name.endswith("-xlog.db"):
            names.append(path.name)
    return sorted(names)


def pending(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def process_state(pid: int) -> str | None:
    """The state letter from /proc (R, S, T for stopped, Z), None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_settled(home, catalog, fleet: Fleet, server: str = "pg1", timeout: float = 180) -> None:
    """Wait until the fleet has archived everything: no source left in incoming/ and no
    claimed catalog row; on timeout, fail with every fleet process's log."""

    def settled() -> bool:
        return not pending(home.incoming(server)) and catalog.counts(server)["claimed"] == 0

    try:
        wait_for(settled, timeout, "the fleet to archive everything", 0.25)
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None


def assert_archived_once(home, catalog, names: list[str], server: str = "pg1") -> None:
    """Every WAL archived, exactly once: one catalog row, one payload, one xlogdb line; sources gone."""
    from walq.catalog import WalState

    assert catalog.archived_names(server) == names
    assert catalog.records(server, WalState.FAILED) == []
    lines = xlogdb_names(home.wals(server), server)
    assert sorted(lines) == names, f"xlogdb lines: {len(lines)} for {len(names)} WAL"
    assert stored_names(home.wals(server)) == names
    assert pending(home.incoming(server)) == []


def wait_flower(flower: Proc, port: int) -> str:
    """Wait until a Flower started by ``Fleet.flower`` answers; return its base URL."""
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: http("GET", f"{base}/healthcheck")[0] == 200 or not flower.alive(),
        60,
        "Flower to answer",
    )
    assert flower.alive(), flower.output()
    return base


def http(
    method: str, url: str, body: object | None = None, auth: str | None = None
) -> tuple[int, object]:
    """A small JSON HTTP client (urllib) returning (status, decoded body or text)."""
    import base64
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def celery_client(config_path: Path):
    """A bare Celery client (JSON only) for sending tasks by name, like an operator's script."""
    from celery import Celery

    from walq import keys
    from walq.config import load_config

    config = load_config(config_path)
    client = Celery("walq-test-client", broker=config.broker_url, backend=config.broker_url)
    client.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_serializer="json",
        task_routes=dict(keys.TASK_QUEUES),
    )
    return client
