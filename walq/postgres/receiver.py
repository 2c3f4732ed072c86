"""Supervising pg_receivewal into a server's streaming directory.

One receiver per server, ever: the supervisor holds the ``receive-wal`` file
lock for its whole life. It runs ``pg_receivewal --no-loop`` on the server's
replication slot (wal-reference.md section 7), and when the child exits (the
server restarted, the network dropped, someone killed it) it starts it again
after an exponential backoff capped at ``BACKOFF_CAP`` seconds. Before every
start, a newest ``.partial`` of the wrong size is truncated to 0 bytes, which
pg_receivewal accepts and re-pads. SIGTERM or SIGINT stops the child cleanly
(SIGINT makes pg_receivewal flush and exit) and then the supervisor; if the
supervisor itself dies, the kernel sends the child SIGINT (PR_SET_PDEATHSIG),
so no orphan keeps the slot busy.

Before every start it also reads ``synchronous_standby_names``: when that names
the receiver's application_name (``streaming_archiver_name``, walq.postgres.syncrep)
pg_receivewal gets ``--synchronous``, so it flushes and reports every message and
the primary's commits can wait for it (Barman's streaming archiver does the same).

The supervisor records its state in ``<streaming_dir>/.walq-receive-wal.json``
(a dot-file: invisible to the scan, to Barman and to pg_receivewal), which
``walq status`` and ``walq check`` read. Secrets never reach a command line or
a log line: the password travels in PGPASSWORD and messages are masked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from walq.config import Config, ServerConfig
from walq.errors import ConfigError, LockBusyError, WalqError, clip
from walq.fsutil import makedirs_durable, open_private, write_private
from walq.locks import FileLock
from walq.postgres.client import (
    SEGMENT_SIZE_SQL,
    PostgresError,
    connect,
    current_position,
    mask_conninfo,
    one_row,
    require_conninfo,
    segment_size,
    session,
    slot_name,
    slot_restart_lsn,
)
from walq.postgres.syncrep import names_standby
from walq.proclife import death_signal_setter
from walq.proclife import proc_start as _proc_start
from walq.wal import WalKind, WalNameError, lsn_to_segment, parse_lsn, parse_wal_name

STATE_FILE = ".walq-receive-wal.json"
LOCK_PURPOSE = "receive-wal"
BACKOFF_START = 1.0  # seconds before the first restart
BACKOFF_CAP = 60.0  # never wait longer than this between restarts
STABLE_AFTER = 60.0  # a child that ran this long resets the backoff
STOP_GRACE = 30.0  # seconds a child gets to exit after SIGINT before SIGKILL

EXIT_OK, EXIT_NOT_OK = 0, 1


# ---------------------------------------------------------------- state file


def state_path(server: ServerConfig) -> Path:
    return server.streaming_dir / STATE_FILE


def read_state(server: ServerConfig) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(server).read_text())
    except (OSError, ValueError):
        return None


def _write_state(server: ServerConfig, state: dict[str, Any]) -> None:
    path = state_path(server)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write_private(tmp, json.dumps(state, indent=2))
        os.replace(tmp, path)
    except OSError as exc:  # status is informative; never stop streaming for it
        _log(server, f"cannot write {path}: {exc.strerror}")


class ReceiverState(TypedDict):
    """What ``walq status`` shows of the receiver (keys in the order of its JSON)."""

    running: bool
    state: str | None  # starting, running, streaming, waiting, stopped, "never started"
    pid: int | None
    child_pid: int | None
    slot: str | None
    application_name: str | None  # what PostgreSQL sees (pg_stat_replication)
    synchronous: bool | None  # pg_receivewal was started with --synchronous
    started_at: float | None
    restarts: int
    last_exit_code: int | None
    last_exit_at: float | None
    last_message: str | None


def receiver_state(server: ServerConfig) -> ReceiverState:
    """The recorded state plus ``running``: the supervisor process recorded there is alive."""
    state = read_state(server) or {}
    pid = state.get("pid")
    running = bool(
        pid and state.get("state") != "stopped" and _proc_start(int(pid)) == state.get("pid_start")
    )
    child = state.get("child_pid")
    child_alive = bool(child and running and _proc_start(int(child)) == state.get("child_start"))
    return {
        "running": running,
        "state": (state.get("state") if running else "stopped") if state else "never started",
        "pid": pid if running else None,
        "child_pid": child if child_alive else None,
        "slot": state.get("slot"),
        "application_name": state.get("application_name"),
        "synchronous": state.get("synchronous") if running else None,
        "started_at": state.get("started_at"),
        "restarts": state.get("restarts", 0),
        "last_exit_code": state.get("last_exit_code"),
        "last_exit_at": state.get("last_exit_at"),
        "last_message": state.get("last_message"),
    }


def _log(server: ServerConfig, message: str) -> None:
    print(f"walq receive-wal {server.name}: {mask_conninfo(message)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pg_receivewal


def find_pg_receivewal(server: ServerConfig) -> str:
    """The configured binary, found on PATH or in PostgreSQL's bindir."""
    configured = server.pg_receivewal_path
    if os.sep in configured:
        if os.access(configured, os.X_OK):
            return configured
    elif found := shutil.which(configured):
        return found
    else:
        candidates = sorted(
            Path("/usr/lib/postgresql").glob(f"*/bin/{configured}"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if candidates:
            return str(candidates[-1])
    raise ConfigError(
        f"servers.{server.name}.pg_receivewal_path: {clip(configured)} not found or not executable"
    )


def client_major(binary: str) -> int | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _conninfo_params(server: ServerConfig) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(require_conninfo(server))
    except Exception as exc:  # psycopg.ProgrammingError on a malformed string
        raise ConfigError(f"servers.{server.name}.conninfo: {mask_conninfo(str(exc))}") from None


def application_name(server: ServerConfig) -> str:
    """pg_receivewal's application_name: the conninfo's own, else ``streaming_archiver_name``
    (Barman adds its name only when the conninfo has none)."""
    if not server.conninfo:
        return server.streaming_archiver_name
    return str(_conninfo_params(server).get("application_name") or server.streaming_archiver_name)


def replication_dsn(server: ServerConfig) -> tuple[str, dict[str, str]]:
    """The --dbname value (no password) and the environment carrying the password."""
    from psycopg.conninfo import make_conninfo

    params = _conninfo_params(server)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    params["dbname"] = "replication"
    params["replication"] = "true"
    params["application_name"] = params.get("application_name") or server.streaming_archiver_name
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def build_command(
    server: ServerConfig, binary: str, synchronous: bool = False
) -> tuple[list[str], dict[str, str]]:
    """pg_receivewal's command line (wal-reference.md 7); never --compress."""
    dsn, env = replication_dsn(server)
    argv = [
        binary,
        f"--dbname={dsn}",
        "--verbose",
        "--no-loop",
        "--no-password",
        f"--directory={server.streaming_dir}",
        f"--slot={slot_name(server)}",
    ]
    if synchronous:
        argv.append("--synchronous")
    return argv, env


def is_synchronous_standby(server: ServerConfig) -> bool:
    """Whether the server's synchronous_standby_names names this receiver (PostgreSQL asked)."""
    with session(server, "cannot read synchronous_standby_names: ") as conn:
        setting = one_row(conn, "SELECT current_setting('synchronous_standby_names')")[0]
    return names_standby(setting or "", application_name(server))


# ---------------------------------------------------------------- directory rules


def _streamed(directory: Path) -> list[tuple[str, WalKind]]:
    found: list[tuple[str, WalKind]] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        try:
            wal = parse_wal_name(name)
        except WalNameError:
            continue
        if wal.kind in (WalKind.SEGMENT, WalKind.PARTIAL):
            found.append((name, wal.kind))
    return found


def truncate_wrong_partial(directory: Path, seg_size: int) -> str | None:
    """Truncate the newest ``.partial`` to 0 bytes when its size is neither 0 nor the segment size."""
    partials = [n for n, kind in _streamed(directory) if kind is WalKind.PARTIAL]
    if not partials:
        return None
    path = directory / partials[-1]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size in (0, seg_size):
        return None
    with open(path, "r+b") as fh:
        fh.truncate(0)
        os.fsync(fh.fileno())
    return f"truncated {path.name} ({size} bytes, segments are {seg_size}) to 0 bytes"


def reset_streaming(server: ServerConfig) -> tuple[bool, str]:
    """``--reset`` (wal-reference.md 7): point the streaming directory at the slot's restart position.

    Returns (ok, message). Refuses, changing nothing, when the directory is ahead of PostgreSQL.
    """
    lsn, current = current_position(server)
    tli = int(current[:8], 16)
    seg_size = segment_size(server)
    exists, restart_lsn = slot_restart_lsn(server, slot_name(server))
    restart = (
        lsn_to_segment(tli, parse_lsn(restart_lsn), seg_size) if exists and restart_lsn else current
    )
    files = _streamed(server.streaming_dir)
    if not files:
        return True, "Nothing to do: the streaming directory is empty"
    newest, kind = files[-1]
    base = newest.removesuffix(".partial")
    if base == restart:
        return True, f"Nothing to do: {newest} is already the restart position"
    if base > current:
        return False, (
            f"{newest} is ahead of PostgreSQL (current WAL {current} at {lsn}); refusing to reset"
        )
    if kind is WalKind.PARTIAL:
        (server.streaming_dir / newest).unlink()
    os.close(open_private(server.streaming_dir / f"{restart}.partial", os.O_WRONLY | os.O_CREAT))
    return (
        True,
        f"Reset: removed {newest if kind is WalKind.PARTIAL else 'nothing'}, created empty {restart}.partial",
    )


def ensure_slot(server: ServerConfig) -> str:
    """Create the physical replication slot if it does not exist (like pg_receivewal --create-slot)."""
    binary = find_pg_receivewal(server)
    name = slot_name(server)
    exists, _ = slot_restart_lsn(server, name)
    if exists:
        return f"Replication slot '{name}' already exists"
    dsn, env = replication_dsn(server)
    res = subprocess.run(
        [
            binary,
            f"--dbname={dsn}",
            "--no-password",
            "--create-slot",
            "--if-not-exists",
            f"--slot={name}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if res.returncode != 0:
        raise PostgresError(
            f"{server.name}: cannot create slot '{name}': {mask_conninfo(res.stderr.strip())}"
        )
    return f"Replication slot '{name}' created"


# ---------------------------------------------------------------- supervision


class Supervisor:
    """Run pg_receivewal until told to stop, restarting it with a capped exponential backoff."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.binary = find_pg_receivewal(server)
        self.preexec = death_signal_setter(signal.SIGINT)  # pg_receivewal ends with its supervisor
        self.stopping = False
        self.child: subprocess.Popen[str] | None = None
        self.seg_size = 0
        self.synchronous = False  # the last answer; kept while PostgreSQL cannot be asked
        self.state: dict[str, Any] = {
            "server": server.name,
            "pid": os.getpid(),
            "pid_start": _proc_start(os.getpid()),
            "started_at": time.time(),
            "state": "starting",
            "slot": slot_name(server),
            "application_name": application_name(server),
            "synchronous": None,
            "child_pid": None,
            "child_start": None,
            "restarts": 0,
            "last_exit_code": None,
            "last_exit_at": None,
            "last_message": None,
        }

    def _save(self, **changes: Any) -> None:
        self.state.update(changes)
        _write_state(self.server, self.state)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    def preflight(self) -> None:
        """Slot present and versions compatible; unreachable PostgreSQL is left to the restart loop."""
        try:
            with connect(self.server) as conn:
                version_num, seg = one_row(
                    conn, f"SELECT current_setting('server_version_num')::int, {SEGMENT_SIZE_SQL}"
                )
                slot = conn.execute(
                    "SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s",
                    (slot_name(self.server),),
                ).fetchone()
        except PostgresError as exc:
            _log(self.server, f"{exc}; will keep trying")
            return
        self.seg_size = int(seg)
        client = client_major(self.binary)
        if client is not None and client < version_num // 10000:
            raise ConfigError(
                f"servers.{self.server.name}.pg_receivewal_path: pg_receivewal {client} is older than "
                f"PostgreSQL {version_num // 10000}; use a client at least as new as the server"
            )
        if slot is None:
            raise ConfigError(
                f"replication slot '{slot_name(self.server)}' does not exist on {self.server.name}: "
                f"run 'walq receive-wal --create-slot {self.server.name}' first"
            )
        if slot[0] != "physical":
            raise ConfigError(f"replication slot '{slot_name(self.server)}' is not a physical slot")

    def _refresh_seg_size(self) -> None:
        if self.seg_size:
            return
        with contextlib.suppress(PostgresError, WalqError):
            self.seg_size = segment_size(self.server)

    def _refresh_synchronous(self) -> None:
        """Ask again before every start: synchronous_standby_names may have changed."""
        try:
            synchronous = is_synchronous_standby(self.server)
        except WalqError as exc:
            _log(self.server, f"{exc}; keeping --synchronous {'on' if self.synchronous else 'off'}")
            return
        if synchronous != self.synchronous:
            name = application_name(self.server)
            _log(
                self.server,
                f"synchronous_standby_names names {name}: streaming with --synchronous"
                if synchronous
                else f"synchronous_standby_names no longer names {name}: streaming asynchronously",
            )
        self.synchronous = synchronous

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def run_once(self) -> int:
        """Start pg_receivewal, relay its messages until it exits, return its exit code."""
        self._refresh_seg_size()
        if self.seg_size and (
            note := truncate_wrong_partial(self.server.streaming_dir, self.seg_size)
        ):
            _log(self.server, note)
        self._refresh_synchronous()
        argv, env = build_command(self.server, self.binary, self.synchronous)
        self.child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            errors="replace",
            preexec_fn=self.preexec,
        )
        self._save(
            state="running",
            child_pid=self.child.pid,
            child_start=_proc_start(self.child.pid),
            child_started_at=time.time(),
            synchronous=self.synchronous,
        )
        if self.stopping:  # a signal arrived while we were starting it
            self.child.send_signal(signal.SIGINT)
        assert self.child.stderr is not None
        for line in self.child.stderr:
            line = line.rstrip()
            if not line:
                continue
            _log(self.server, line)
            if "starting log streaming" in line:
                self._save(state="streaming", last_message=mask_conninfo(line))
            elif "error" in line.lower() or "fatal" in line.lower():
                self._save(last_message=mask_conninfo(line))
        try:
            code = self.child.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.child.kill()
            code = self.child.wait()
        return code

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        backoff = BACKOFF_START
        try:
            self._save()
            while not self.stopping:
                started = time.monotonic()
                code = self.run_once()
                why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                self._save(
                    last_exit_code=code, last_exit_at=time.time(), child_pid=None, child_start=None
                )
                if self.stopping:
                    break
                if time.monotonic() - started >= STABLE_AFTER:
                    backoff = BACKOFF_START
                _log(self.server, f"pg_receivewal ended ({why}); restarting in {backoff:.0f}s")
                self._save(
                    state="waiting",
                    restarts=self.state["restarts"] + 1,
                    last_message=f"pg_receivewal ended ({why})",
                )
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
        finally:
            self._save(state="stopped", child_pid=None, child_start=None, stopped_at=time.time())
            for sig, handler in old.items():
                signal.signal(sig, handler)
        _log(self.server, "stopped")
        return EXIT_OK


def receive_wal(
    config: Config, server_name: str, create_slot: bool = False, reset: bool = False
) -> int:
    """``walq receive-wal``: create the slot, reset the directory, or supervise the receiver.

    ``--create-slot`` and ``--reset`` do their one job and return (Barman's
    behaviour); without them this runs until SIGTERM/SIGINT and returns 0.
    """
    server = config.server(server_name)
    require_conninfo(server)
    try:
        makedirs_durable(server.streaming_dir)
    except OSError as exc:
        raise ConfigError(
            f"servers.{server.name}.streaming_dir: cannot create {server.streaming_dir}: {exc.strerror}"
        ) from None
    if create_slot:
        print(ensure_slot(server))
        return EXIT_OK
    lock = FileLock(config.home, server.name, LOCK_PURPOSE)
    try:
        lock.acquire()
    except LockBusyError:
        state = receiver_state(server)
        who = f" (pid {state['pid']})" if state.get("pid") else ""
        print(f"walq: a receiver for {server.name} is already running{who}", file=sys.stderr)
        return EXIT_NOT_OK
    try:
        if reset:
            ok, message = reset_streaming(server)
            print(message, file=sys.stdout if ok else sys.stderr)
            return EXIT_OK if ok else EXIT_NOT_OK
        supervisor = Supervisor(server)
        supervisor.preflight()
        return supervisor.run()
    finally:
        lock.release()
