"""``walq receive-wal`` in the background, and closing a streamed segment on demand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.services.homes import WALQ, WalqHome
from tests.services.pg import Cluster, wait_for
from walq.postgres.receiver import STATE_FILE


def streaming_home(make_home, cluster: Cluster, **settings: object) -> WalqHome:
    """A walq home for ``cluster`` archived by streaming only (no archive_command), its
    replication slot created: what ``Receiver`` needs to start."""
    server = {
        "conninfo": cluster.conninfo,
        "archiver": False,
        "streaming_archiver": True,
        "compression": "gzip",
        **settings,
    }
    home = make_home({"pg1": server})
    home.run("receive-wal", "pg1", "--create-slot", check=True)
    return home


class Receiver:
    """``walq receive-wal SERVER`` running in the background, its output in a log file."""

    def __init__(self, home: WalqHome, server: str = "pg1") -> None:
        self.home = home
        self.server = server
        self.log_path = home.root / f"receiver-{server}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def streaming(self) -> Path:
        return self.home.server_dir(self.server) / "streaming"

    def start(self) -> Receiver:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(WALQ), "--config", str(self.home.config_path), "receive-wal", self.server],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def state(self) -> dict:
        try:
            return json.loads((self.streaming / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def wait_streaming(self, timeout: float = 120, not_child: int | None = None) -> int:
        """Wait until pg_receivewal reports streaming (optionally a child other than ``not_child``)."""

        def ready():
            st = self.state()
            assert self.proc is not None and self.proc.poll() is None, (
                f"receiver exited:\n{self.log()}"
            )
            child = st.get("child_pid")
            partial = any(n.endswith(".partial") for n in os.listdir(self.streaming))
            if st.get("state") == "streaming" and child and child != not_child and partial:
                return child
            return None

        return wait_for(ready, timeout, f"the receiver to stream\n{self.log()}")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def wait_gone(pid: int, timeout: float, what: str) -> None:
    """Wait until process ``pid`` has exited (gone, or a zombie nobody has reaped yet)."""

    def gone() -> bool:
        try:
            return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        except FileNotFoundError:
            return True

    wait_for(gone, timeout, what)


def close_segment(cluster: Cluster, streaming: Path) -> str:
    """Switch WAL and wait until the closed segment is complete in streaming/ with a newer
    .partial beside it (so the keep-last rule no longer holds it back)."""
    closed = cluster.switch_wal()

    def settled() -> bool:
        names = sorted(os.listdir(streaming))
        newer = [n for n in names if n.endswith(".partial") and n[:24] > closed]
        if closed in names and newer:
            return True
        cluster.psql("SELECT txid_current()")  # a commit record opens the next segment
        return False

    wait_for(settled, 120, f"{closed} to be complete in {streaming}", interval=0.5)
    return closed
