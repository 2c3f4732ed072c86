"""Throwaway PostgreSQL clusters for tests, the demo and the benchmark.

initdb refuses to run as root, so clusters run as the ``postgres`` OS user
(when we are root); archive_command/restore_command then run walq as that
user, so the walq interpreter must be reachable by it (see ensure_runnable).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def pg_bindir() -> Path:
    """Directory of initdb/pg_ctl: pg_config's BINDIR, else the newest Debian install."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if debian:
        return debian[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _port_share() -> tuple[int, int]:
    """(this process's share, number of shares): each pytest-xdist worker gwK owns share K."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if worker.startswith("gw") and count > 1:
        return int(worker[2:]), count
    return 0, 1


def free_port() -> int:
    """A port free on 127.0.0.1 now (the caller binds it later). Under ``pytest -n N`` worker K
    takes only ports with (port // 2) % N == K, so two workers never choose the same port
    between choosing and binding it (// 2: Linux hands bind(0) odd ports only)."""
    share, shares = _port_share()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (port // 2) % shares == share:
            return port


def as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def chown_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """One PostgreSQL cluster in ``root/data``, listening on a private port and socket."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = port or free_port()
        self.bindir = pg_bindir()

    def _run(self, args: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_postgres(), *args], check=check, capture_output=True, text=True, **kw
        )

    def initdb(self, wal_segsize_mb: int = 1, conf: dict[str, str] | None = None) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        chown_postgres(self.root)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                f"--wal-segsize={wal_segsize_mb}",
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]
        )
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "max_wal_size": "64MB",
            "min_wal_size": "8MB",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "max_replication_slots": "4",
            "shared_buffers": "32MB",
            **(conf or {}),
        }
        self.configure(settings)
        return self

    def configure(self, settings: dict[str, str]) -> None:
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf = self.data / "postgresql.auto.conf"
        self._run(["sh", "-c", f"cat >> {conf}"], input=lines)

    def start(self) -> Cluster:
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            check=False,
        )

    def is_running(self) -> bool:
        return (
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"], check=False
            ).returncode
            == 0
        )

    @property
    def conninfo(self) -> str:
        return f"host={self.root} port={self.port} user=postgres dbname=postgres"

    def connection_args(self) -> list[str]:
        """The client options (psql, pgbench, pg_basebackup) that reach this cluster as postgres."""
        return ["-h", str(self.root), "-p", str(self.port), "-U", "postgres"]

    def pgbench_command(self, *options: str) -> list[str]:
        """A pgbench command line against this cluster's postgres database."""
        return ["pgbench", *options, *self.connection_args(), "postgres"]

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(
            [
                "psql",
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                *self.connection_args(),
                "-d",
                db,
                "-c",
                sql,
            ]
        )
        return out.stdout.strip()

    def pgbench_init(self, scale: int = 1) -> None:
        self._run(self.pgbench_command("-i", "-q", "-s", str(scale)))

    def pgbench(self, transactions: int = 500, clients: int = 2) -> None:
        self._run(self.pgbench_command("-n", "-t", str(transactions), "-c", str(clients)))

    def basebackup(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        chown_postgres(dest.parent)
        self._run(
            [
                "pg_basebackup",
                *self.connection_args(),
                "-D",
                str(dest),
                "-X",
                "none",
                "--no-sync",
                "-c",
                "fast",
            ]
        )

    def switch_wal(self) -> str:
        return self.psql("SELECT pg_walfile_name(pg_switch_wal())")

    def current_wal(self) -> str:
        return self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")

    def restore_from(
        self, backup: Path, conf: dict[str, str], signal: str = "recovery.signal"
    ) -> Cluster:
        """Make this cluster a copy of a base backup set up for archive recovery."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        chown_postgres(self.root)
        self._run(["cp", "-a", str(backup), str(self.data)])
        self.configure(
            {
                "port": str(self.port),
                "unix_socket_directories": f"'{self.root}'",
                "archive_mode": "off",
                **conf,
            }
        )
        self._run(["touch", str(self.data / signal)])
        return self

    def wait_promoted(self, timeout: float = 120) -> None:
        wait_for(
            lambda: self.psql("SELECT pg_is_in_recovery()") == "f", timeout, "recovery to finish"
        )

    def wait_archived(self, wal: str, timeout: float = 60) -> None:
        """Wait until PostgreSQL's archiver reports ``wal`` (or a later one) archived."""
        wait_for(
            lambda: (
                (self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or "")
                >= wal
            ),
            timeout,
            f"{wal} to be archived",
        )

    def wait_ready_drained(self, timeout: float, what: str) -> None:
        """Wait until the archiver has caught up with everything it was given (no .ready left)."""
        wait_for(
            lambda: (
                int(
                    self.psql(
                        "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f WHERE f LIKE '%.ready'"
                    )
                )
                == 0
            ),
            timeout,
            what,
        )

    def accounts_fingerprint(self) -> tuple[int, str]:
        """Row count and an md5 over pgbench_accounts in key order: equal data, equal value."""
        out = self.psql(
            "SELECT count(*) || ' ' || md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts"
        )
        count, digest = out.split()
        return int(count), digest

    def log(self) -> str:
        try:
            return (self.root / "log").read_text()
        except OSError:
            return ""


def ensure_runnable(python: Path) -> None:
    """Fail loudly if the postgres user cannot run walq's interpreter."""
    if os.geteuid() != 0:
        return
    res = subprocess.run(
        [*as_postgres(), str(python), "-c", "import walq"], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"the postgres user cannot run {python}: {res.stderr.strip()} "
            "(create the virtualenv with a system python, e.g. /usr/bin/python3)"
        )
