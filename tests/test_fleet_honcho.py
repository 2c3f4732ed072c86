"""The issue's "done" check: ``honcho start`` (the Procfile, as the README says)
archives a running pgbench's WAL continuously and ``walq status`` shows the
watermark advancing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from tests.services.fleet import (
    REPO,
    VENV_BIN,
    http,
)
from tests.services.homes import walq_command
from tests.services.pg import free_port, wait_for


def test_honcho_start_archives_pgbench_continuously(
    fleet_home, cluster_factory, workdir: Path, walq_runnable_by_postgres
) -> None:
    home = fleet_home()
    home.give_to_postgres()  # archive_command runs as the postgres user, as in production
    exporter_port = free_port()
    log = open(workdir / "honcho.log", "wb")  # noqa: SIM115
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "WALQ_CONFIG": str(home.config_path),
        "FLOWER_BASIC_AUTH": "ops:honcho-test",
        "FLOWER_PORT": str(free_port()),
        "WALQ_EXPORTER_PORT": str(exporter_port),
        "WALQ_BEAT_SCHEDULE": str(workdir / "beat-schedule"),
        "WALQ_CPU_CONCURRENCY": "1",
        "WALQ_IO_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    honcho = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "start"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    primary = cluster_factory(
        "primary",
        conf={
            "archive_mode": "on",
            "archive_command": f"'{walq_command(home, 'put-wal pg1 %p')}'",
        },
    )
    try:
        primary.start()
        primary.pgbench_init(1)

        def load() -> None:
            while not stop.is_set():
                primary.pgbench(200)
                primary.switch_wal()

        bench = threading.Thread(target=load, daemon=True)
        bench.start()

        def watermark() -> str | None:
            res = home.run("status", "--json")
            return (
                json.loads(res.stdout)["servers"][0]["watermark"] if res.returncode == 0 else None
            )

        def logs() -> str:
            return (workdir / "honcho.log").read_text(errors="replace")[-8000:]

        try:
            first = wait_for(watermark, 180, "a first watermark", 0.5)
            second = wait_for(
                lambda: (w := watermark()) and w > first and w, 180, "the watermark to advance", 0.5
            )
            wait_for(
                lambda: (w := watermark()) and w > second,
                180,
                "the watermark to keep advancing",
                0.5,
            )
        except TimeoutError:
            raise AssertionError(logs()) from None
        status = json.loads(home.run("status", "--json", check=True).stdout)
        assert status["servers"][0]["failed"] == []
        assert set(status["queues"]) == {"walq.scan", "walq.cpu", "walq.io"}
        # The Procfile's exporter serves the fleet's metrics.
        code, text = http("GET", f"http://127.0.0.1:{exporter_port}/metrics")
        assert code == 200 and 'walq_live_workers{queue="walq.io"} 1.0' in str(text), text
        assert re.search(r'walq_archived_wals_total\{server="pg1"\} [1-9]', str(text)), text
    finally:
        stop.set()
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(timeout=30)
        log.close()
        primary.stop("immediate")
