"""Measuring one benchmark run: wall time, CPU seconds of the whole process tree,
and peak RSS per process.

CPU is read from a cpuacct cgroup (v1) made for the run: every process the run
starts is put into it before it execs, and children inherit it, so daemons
(pgBackRest's async archiver) and pool workers are counted even when they are
not waited for. Where the cgroup cannot be made, CPU falls back to
``RUSAGE_CHILDREN`` deltas (exact for waited children only; the run says so).

Peak RSS: a sampler thread reads ``VmHWM`` (the high-water mark of resident
memory, kept by the kernel per process) of every process in the cgroup every
20 ms; the largest process's value is reported.
The benchmark process itself is never in the cgroup.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CGROOT = Path("/sys/fs/cgroup/cpuacct")


@dataclass
class Sample:
    wall: float
    cpu: float | None  # seconds, whole tree
    peak_rss: int  # bytes, the largest single process
    peak_rss_by: str  # which process
    cpu_source: str
    procs: dict[str, int] = field(default_factory=dict)  # label -> peak VmHWM bytes


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _vmhwm(pid: int) -> int:
    text = _read(Path(f"/proc/{pid}/status")) or ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _label(pid: int) -> str:
    raw = _read(Path(f"/proc/{pid}/cmdline")) or ""
    parts = [p for p in raw.split("\0") if p]
    if not parts:
        return f"pid {pid}"
    words = [os.path.basename(parts[0])] + [
        os.path.basename(p) if "/" in p else p for p in parts[1:4]
    ]
    return " ".join(words)[:60]


class Meter:
    """``with Meter() as m: m.run([...])`` — everything started through ``m`` is measured."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.group: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peaks: dict[int, tuple[int, str]] = {}
        self.t0 = self.t1 = 0.0
        self._cpu0 = 0
        self._ru0: resource.struct_rusage | None = None
        self.wait_maxrss: list[tuple[int, str]] = []
        self._sh: subprocess.Popen | None = None
        self._sh_env: dict[str, str] | None = None
        self._sh_err = Path(tempfile.mkstemp(prefix="walq-bench-err-")[1])

    # -- cgroup ---------------------------------------------------------------------------
    def _make_group(self) -> None:
        path = CGROOT / f"walq-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            path.mkdir()
            (path / "cpuacct.usage").read_text()
            self.group = path
        except OSError:
            self.group = None

    def _cpu_ns(self) -> int:
        assert self.group is not None
        return int((self.group / "cpuacct.usage").read_text())

    def adopt(self, pid: int) -> None:
        """Move a running process (and its future children) into the run's group."""
        if self.group is not None:
            with contextlib.suppress(OSError):
                (self.group / "cgroup.procs").write_text(str(pid))

    def _preexec(self):
        group = self.group

        def enter() -> None:
            if group is not None:
                with open(group / "cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))

        return enter

    def pids(self) -> list[int]:
        if self.group is None:
            return []
        text = _read(self.group / "cgroup.procs") or ""
        return [int(x) for x in text.split()]

    # -- sampling -------------------------------------------------------------------------
    def _sample_once(self) -> None:
        for pid in self.pids():
            hwm = _vmhwm(pid)
            old = self.peaks.get(pid)
            if old is None:
                self.peaks[pid] = (hwm, _label(pid))
            elif hwm > old[0]:
                self.peaks[pid] = (hwm, old[1])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    # -- running things -------------------------------------------------------------------
    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.DEVNULL)
        return subprocess.Popen(cmd, preexec_fn=self._preexec(), **kw)

    def wait(self, proc: subprocess.Popen, label: str = "") -> int:
        """Reap the child (wait4); returns its exit code."""
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.wait_maxrss.append((ru.ru_maxrss * 1024, label or os.path.basename(str(proc.args[0]))))
        return proc.returncode

    def run(self, cmd: list[str], *, check: bool = True, label: str = "", **kw) -> tuple[int, str]:
        with tempfile.TemporaryFile() as errf:
            proc = self.popen(cmd, stderr=errf, **kw)
            code = self.wait(proc, label)
            errf.seek(0)
            text = errf.read()[-8000:].decode(errors="replace")
        if check and code != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {code}:\n{text[-3000:]}")
        return code, text

    def system(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        check: bool = True,
        label: str = "",
    ) -> tuple[int, str]:
        """Run ``cmd`` the way PostgreSQL runs archive_command and restore_command: a
        shell forks and execs it. The shell lives in the run's group, so each call
        pays its own process start-up but not the harness's cgroup attach, which
        costs several ms per process and would dwarf a fast tool's call."""
        sh = self._shell(env)
        assert sh.stdin is not None and sh.stdout is not None
        sh.stdin.write(
            f"{shlex.join(cmd)} </dev/null >/dev/null 2>{shlex.quote(str(self._sh_err))}\n"
        )
        sh.stdin.flush()
        answer = sh.stdout.readline()
        if not answer:
            raise RuntimeError(f"the bench's shell exited (running {label or cmd[0]})")
        code = int(answer)
        text = self._sh_err.read_text(errors="replace")[-8000:]
        if check and code != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {code}:\n{text[-3000:]}")
        return code, text

    def _shell(self, env: dict[str, str] | None) -> subprocess.Popen:
        if self._sh is not None and env != self._sh_env:
            self._close_shell()
        if self._sh is None:
            loop = 'while IFS= read -r line; do eval "$line"; printf "%s\\n" "$?"; done'
            self._sh = subprocess.Popen(
                ["/bin/sh", "-c", loop],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=self._preexec(),
            )
            self._sh_env = env
        return self._sh

    def _close_shell(self) -> None:
        if self._sh is not None:
            assert self._sh.stdin is not None
            self._sh.stdin.close()
            self._sh.wait()
            self._sh = None

    def __enter__(self) -> Meter:
        self._make_group()
        self._ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0 = self._cpu_ns() if self.group else 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def start_clock(self) -> None:
        """Restart wall and CPU clocks (after set-up work that should not count)."""
        self._sample_once()
        self._ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0 = self._cpu_ns() if self.group else 0
        self.t0 = time.perf_counter()

    def stop_clock(self) -> None:
        self._close_shell()  # not part of the run any more (and it would look like a lingering process)
        self.t1 = time.perf_counter()
        self._cpu1 = self._cpu_ns() if self.group else 0
        self._ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._sample_once()

    def __exit__(self, *exc: object) -> None:
        if not self.t1:
            self.stop_clock()
        self._stop.set()
        if self._thread:
            self._thread.join()

    def close(self) -> None:
        """Remove the cgroup once every process in it has exited (call after cleanup)."""
        self._close_shell()
        self._sh_err.unlink(missing_ok=True)
        if self.group is None:
            return
        deadline = time.monotonic() + 30
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.group.rmdir()

    def sample(self) -> Sample:
        if self.group is not None:
            cpu: float | None = (self._cpu1 - self._cpu0) / 1e9
            source = "cgroup"
        else:
            assert self._ru0 is not None
            r0, r1 = self._ru0, self._ru1
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            source = "rusage"
        # wait4's ru_maxrss is not used: Linux carries the parent's RSS at fork time
        # into the child's maximum across exec, so it would report this process's size.
        peaks = list(self.peaks.values())
        peak, by = max(peaks, default=(0, ""))
        procs: dict[str, int] = {}
        for value, label in peaks:
            procs[label] = max(procs.get(label, 0), value)
        return Sample(self.t1 - self.t0, cpu, peak, by, source, procs)
