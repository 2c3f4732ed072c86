"""A walq installation under test: its config file, its home, and the CLI to run on it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.services.pg import as_postgres, chown_postgres
from walq.config import Config, load_config

VENV_BIN = Path(sys.executable).parent
WALQ = VENV_BIN / "walq"


@dataclass
class WalqHome:
    """A configured walq installation: config file, home, and a CLI runner."""

    root: Path
    config_path: Path

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def home(self) -> Path:
        return self.root / "home"

    def server_dir(self, server: str = "pg1") -> Path:
        return self.home / server

    def incoming(self, server: str = "pg1") -> Path:
        return self.home / server / "incoming"

    def errors(self, server: str = "pg1") -> Path:
        return self.home / server / "errors"

    def wals(self, server: str = "pg1") -> Path:
        return self.home / server / "wals"

    def stored(self, name: str, server: str = "pg1") -> Path:
        """Where a local archive keeps ``name``'s object (its hash directory, the bare name)."""
        return self.wals(server) / name[:16] / name

    def archive_for_tampering(self, segment: Path, server: str = "pg1") -> Path:
        """Archive one WAL file and return its stored object, made writable for a test to
        corrupt."""
        self.incoming(server).mkdir(parents=True, exist_ok=True)
        shutil.copy2(segment, self.incoming(server) / segment.name)
        self.run("archive", check=True)
        stored = self.stored(segment.name, server)
        stored.chmod(0o644)
        return stored

    def give_to_postgres(self, *servers: str) -> None:
        """Create the servers' directories now and hand the tree to the postgres user,
        so a process running as root (a worker) cannot create them first, unwritable
        for archive_command."""
        for server in servers or ("pg1",):
            for sub in ("incoming", "streaming", "errors"):
                (self.home / server / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "spool").mkdir(parents=True, exist_ok=True)
        chown_postgres(self.root)

    def command(self, *args: str) -> list[str]:
        """The walq CLI command line on this installation's config."""
        return [str(WALQ), "--config", str(self.config_path), *args]

    def start(self, *args: str, capture: bool = False) -> subprocess.Popen[str]:
        """Start the walq CLI in its own session without waiting, for a test to signal or kill
        mid-run; with ``capture`` its stdout and stderr are piped (text), else discarded."""
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        return subprocess.Popen(
            self.command(*args), stdout=out, stderr=out, text=True, start_new_session=True
        )

    def run(
        self, *args: str, as_pg: bool = False, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Run the walq CLI (optionally as the postgres OS user, like archive_command)."""
        if as_pg:
            chown_postgres(self.root)
        cmd = [*(as_postgres() if as_pg else []), *self.command(*args)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(
                f"walq {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
            )
        return res


def walq_command(home: WalqHome, *args: str) -> str:
    """A shell command line for archive_command/restore_command."""
    return f"{WALQ} --config {home.config_path} {' '.join(args)}"


def spooled(spool: Path) -> list[str]:
    """The segments waiting in the spool (not the prefetcher's own dot-files)."""
    return (
        sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
        if spool.is_dir()
        else []
    )


def xlogdb_names(wals_dir: Path, server: str = "pg1") -> list[str]:
    """The WAL names in a Barman wals/ directory's ``<server>-xlog.db``, in file order."""
    try:
        return [
            line.split()[0]
            for line in (wals_dir / f"{server}-xlog.db").read_text().splitlines()
            if line.strip()
        ]
    except FileNotFoundError:
        return []
