"""Barman's WAL hook scripts: run them around each archived or deleted WAL.

The four hooks of one kind (``archive`` or ``wal_delete``) run in Barman's order:
standard pre, retry pre, the action, retry post, standard post. A standard hook
runs once and only its exit code is logged. A retry hook runs until it exits 0
(SUCCESS), 62 (ABORT_CONTINUE) or 63 (ABORT_STOP); anything else, a timeout
included, is a transient failure and the hook runs again after
``hook_retry_sleep`` seconds. A pre retry hook's 63 stops the action
(``HookStop``); a post retry hook's 63 is logged and ignored, as in Barman.

Where walq differs from Barman, on purpose:

- the environment is built from a clean base (PATH, HOME, locale, ...) plus the
  ``BARMAN_*`` variables, never walq's own: no ``WALQ_*``, ``AWS_*``, passphrase or
  conninfo reaches a hook (Barman hands its whole environment on);
- each run is killed (with its whole process group) after ``hook_timeout`` seconds;
- a retry hook gives up after ``hook_max_attempts`` attempts (Barman retries
  forever): a pre hook that gave up stops the action like 63 (the WAL stays where
  it is and the next run asks again), a post hook that gave up is logged;
- each run is one line in walq's log (logger ``walq.hooks``), its output clipped.

Only stdlib is imported: the module is loaded only when a hook is configured.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from walq.config import Config, ServerConfig
from walq.errors import AlreadyDone, clip
from walq.masking import mask_secrets

log = logging.getLogger("walq.hooks")

EXIT_SUCCESS = 0
EXIT_ABORT_CONTINUE = 62
EXIT_ABORT_STOP = 63
OUTPUT_KEPT = 4096  # bytes of a hook's output read back for its log line
OUTPUT_SHOWN = 300  # characters of that output in the log line
# The only variables a hook inherits from walq's environment: enough to find programs
# and speak the locale, nothing that could hold a credential.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

HookKind = Literal["archive", "wal_delete"]


class HookStop(AlreadyDone):
    """A pre retry hook asked to stop (exit 63) or gave up: the action must not happen.

    An AlreadyDone: the fleet chain that meets it ends quietly (the WAL stays in
    its source directory and a later scan claims it again)."""


@dataclass(frozen=True, slots=True)
class WalHookInfo:
    """What a WAL hook is told about its WAL (Barman's env_from_wal_info)."""

    segment: str  # BARMAN_SEGMENT: the WAL's name
    file: str  # BARMAN_FILE: source path (pre archive) or archived path / s3:// URL
    size: int  # BARMAN_SIZE: source size (pre archive) or stored size
    timestamp: float  # BARMAN_TIMESTAMP: the WAL file's mtime
    compression: str  # BARMAN_COMPRESSION: codec name, "" when not compressed


@dataclass(frozen=True, slots=True)
class HookRun:
    """One run of one hook script: its exit status (None: killed or not started)."""

    script_key: str
    status: int | None
    seconds: float
    output: str


@functools.cache
def versions() -> str:
    """walq's version, for BARMAN_VERSION (read once per process)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("walq")
    except PackageNotFoundError:
        return "unknown"


class WalHooks:
    """The hooks of one kind for one server; ``pre`` and ``post`` run around one WAL.

    ``heartbeat`` is called before every attempt of a retry hook, so a long retry
    loop keeps the caller's claim or lock alive."""

    def __init__(
        self,
        config: Config,
        server: ServerConfig,
        kind: HookKind,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.kind = kind
        self.heartbeat = heartbeat
        self.config_file = str(config.config_file or "")
        self.cwd = str(config.home) if config.home.is_dir() else "/"
        self.version = versions()
        _log_somewhere()

    # -- the two halves around an action ----------------------------------------------

    def pre(self, info: WalHookInfo) -> None:
        """Standard pre hook, then retry pre hook; HookStop when the action must not run."""
        self._standard("pre", info, None)
        status = self._retry("pre", info, None)
        if status == EXIT_ABORT_STOP or status is _GAVE_UP:
            key = f"pre_{self.kind}_retry_script"
            why = "exit 63 (ABORT_STOP)" if status == EXIT_ABORT_STOP else "gave up"
            raise HookStop(f"{self.server.name}/{info.segment}: {key} {why}; not done this round")

    def post(self, info: WalHookInfo, error: str | None) -> None:
        """Retry post hook, then standard post hook; never raises (a post hook cannot
        undo the action)."""
        try:
            self._retry("post", info, error)
            self._standard("post", info, error)
        except Exception as exc:  # a bug here must not fail a WAL that is already settled
            log.warning("%s: post %s hooks failed: %s", self.server.name, self.kind, exc)

    # -- the two kinds of hook ----------------------------------------------------------

    def _standard(self, phase: str, info: WalHookInfo, error: str | None) -> None:
        key = f"{phase}_{self.kind}_script"
        if getattr(self.server, key):
            self.run(key, phase, False, info, error)

    def _retry(self, phase: str, info: WalHookInfo, error: str | None) -> int | object | None:
        key = f"{phase}_{self.kind}_retry_script"
        if not getattr(self.server, key):
            return None
        attempts = self.server.hook_max_attempts or 1
        for attempt in range(1, attempts + 1):
            if self.heartbeat is not None:
                self.heartbeat()
            status = self.run(key, phase, True, info, error).status
            if status in (EXIT_SUCCESS, EXIT_ABORT_CONTINUE, EXIT_ABORT_STOP):
                if status == EXIT_ABORT_CONTINUE:
                    log.warning(
                        "%s: %s exit 62 (ABORT_CONTINUE): walq goes on", self.server.name, key
                    )
                elif status == EXIT_ABORT_STOP and phase == "post":
                    log.warning(
                        "%s: %s exit 63 (ABORT_STOP) ignored after the action",
                        self.server.name,
                        key,
                    )
                return status
            if attempt < attempts:
                time.sleep(self.server.hook_retry_sleep or 0.0)
        log.warning(
            "%s: %s %s: gave up after %d attempts",
            self.server.name,
            key,
            info.segment,
            attempts,
        )
        return _GAVE_UP

    # -- one run ---------------------------------------------------------------------------

    def environment(
        self, key: str, phase: str, retry: bool, info: WalHookInfo, error: str | None
    ) -> dict[str, str]:
        """Barman's variables on a clean base: nothing of walq's own environment but
        what finds programs and speaks the locale (INHERITED)."""
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(
            {
                "BARMAN_VERSION": self.version,
                "BARMAN_SERVER": self.server.name,
                "BARMAN_CONFIGURATION": self.config_file,
                "BARMAN_HOOK": key.removeprefix(f"{phase}_"),
                "BARMAN_RETRY": "1" if retry else "0",
                "BARMAN_PHASE": phase,
                "BARMAN_SEGMENT": info.segment,
                "BARMAN_FILE": info.file,
                "BARMAN_SIZE": str(info.size),
                "BARMAN_TIMESTAMP": str(info.timestamp),
                "BARMAN_COMPRESSION": info.compression,
                "BARMAN_ERROR": mask_secrets(error or ""),
            }
        )
        return env

    def run(
        self, key: str, phase: str, retry: bool, info: WalHookInfo, error: str | None
    ) -> HookRun:
        """Run the hook once through the shell, bounded by hook_timeout; one log line."""
        command = getattr(self.server, key)
        timeout = self.server.hook_timeout or 300.0
        env = self.environment(key, phase, retry, info, error)
        started = time.monotonic()
        status: int | None = None
        note = ""
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    env=env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a timeout kills it whole
                    close_fds=True,
                )
            except OSError as exc:
                note = f"cannot start: {exc.strerror}"
            else:
                try:
                    status = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    note = f"killed after {timeout:g} s (hook_timeout)"
            out.seek(0)
            output = mask_secrets(out.read(OUTPUT_KEPT).decode(errors="replace").strip())
        seconds = time.monotonic() - started
        result = f"exit {status}" if status is not None else note
        shown = f" output: {clip(' | '.join(output.splitlines()), OUTPUT_SHOWN)}" if output else ""
        level = logging.INFO if status == EXIT_SUCCESS else logging.WARNING
        log.log(
            level,
            "hook %s %s %s: %s (%.2f s)%s",
            self.server.name,
            key,
            info.segment,
            result,
            seconds,
            shown,
        )
        return HookRun(key, status, seconds, output)


_GAVE_UP = object()  # a retry hook's result when its attempts ran out


def _log_somewhere() -> None:
    """walq's log is stderr for the CLI (one ``walq: hook ...`` line per run); under a
    Celery worker, whose logging is configured, the worker's log."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("walq: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the hook's process group (the shell and whatever it started), then reap."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
