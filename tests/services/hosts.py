"""A second "host" on one machine: a Celery worker in its own mount namespace.

``unshare -m`` gives the worker a private copy of the mount table; an empty
tmpfs mounted over another group's server directories there hides them from
that worker only, as a host that does not mount them would not see them.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.services.fleet import CELERY, REPO, Fleet, Proc, proc_ready, worker_args
from tests.services.pg import wait_for


def worker_on_host(fleet: Fleet, name: str, queues: str, hidden: list[Path]) -> Proc:
    """A prefork worker consuming ``queues`` that cannot see the ``hidden`` directories."""
    mounts = " && ".join(
        f"mount -t tmpfs -o size=1m walq-hidden {shlex.quote(str(path))}" for path in hidden
    )
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mounts} && exec "$0" "$@"',
        str(CELERY),
        "-A",
        "workers",
        *worker_args(name, "prefork", 1, queues),
    ]
    fleet.logdir.mkdir(parents=True, exist_ok=True)
    log = fleet.logdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=fleet._env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(name, popen, log)
    fleet.procs.append(proc)
    wait_for(lambda: proc_ready(proc), 90, f"worker {name} to be ready", 0.2)
    return proc
