"""The README's demo: a throwaway PostgreSQL archives through walq and is restored from it.

1. initdb a cluster (1 MiB segments) whose archive_command is `walq put-wal`;
2. pgbench, a base backup, more pgbench; remember row count + checksum;
3. `walq archive` (embedded mode) and `walq status`;
4. restore the base backup with restore_command = `walq get-wal --prefetch 8`
   to the end of the archive, and compare the data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.services.pg import Cluster, as_postgres, chown_postgres, ensure_runnable  # noqa: E402

WALQ = Path(sys.executable).parent / "walq"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def walq(config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [*as_postgres(), str(WALQ), "--config", str(config), *args]
    print("$ walq " + " ".join(args), flush=True)
    return subprocess.run(cmd, text=True)


def main() -> int:
    ensure_runnable(Path(sys.executable))
    root = Path(tempfile.mkdtemp(prefix="walq-demo-", dir="/tmp"))
    os.chmod(root, 0o755)
    config = root / "walq.toml"
    config.write_text(f'home = "{root / "home"}"\n\n[servers.demo]\ncompression = "zstd"\n')
    (root / "home").mkdir()
    chown_postgres(root)
    walq_cmd = f"{WALQ} --config {config}"
    primary = Cluster(root / "primary")
    restored = Cluster(root / "restored")
    try:
        step("initdb a throwaway cluster with archive_command = walq put-wal")
        primary.initdb(
            conf={"archive_mode": "on", "archive_command": f"'{walq_cmd} put-wal demo %p'"}
        )
        primary.start()
        step("pgbench -i, base backup, then pgbench traffic")
        primary.pgbench_init(2)
        primary.basebackup(root / "base")
        primary.pgbench(2000, clients=4)
        before = primary.accounts_fingerprint()
        last = primary.switch_wal()
        primary.wait_archived(last)
        primary.stop()
        step("walq archive (embedded mode: validate, compress, store, commit)")
        if walq(config, "archive").returncode != 0:
            return 1
        walq(config, "status", "demo")
        if walq(config, "verify", "demo").returncode != 0:
            return 1
        step("restore the base backup with restore_command = walq get-wal --prefetch 8")
        restored.restore_from(
            root / "base", {"restore_command": f"'{walq_cmd} get-wal demo %f %p --prefetch 8'"}
        )
        restored.start()
        restored.wait_promoted()
        after = restored.accounts_fingerprint()
        restored.stop()
        step("compare pgbench_accounts: row count and md5 of (aid, abalance)")
        print(f"before (primary):  {before[0]} rows, md5 {before[1]}")
        print(f"after  (restored): {after[0]} rows, md5 {after[1]}")
        if before == after:
            print("MATCH: the restored cluster has exactly the primary's data")
            shutil.rmtree(root, ignore_errors=True)
            return 0
        print(f"MISMATCH: see {root}")
        return 1
    finally:
        primary.stop("immediate")
        restored.stop("immediate")


if __name__ == "__main__":
    sys.exit(main())
