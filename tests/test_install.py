"""The README's Install section, followed as written, and the systemd units it ships.

``test_install_from_a_clean_copy_archives_as_postgres`` (slow: ~2 minutes, most of
it pip) copies the files a clone would have, builds a wheel with ``pip wheel
--no-deps``, installs it non-editable into a fresh venv made by the system
python, and then uses nothing but that venv's absolute paths: ``walq --version``
as the postgres user, a real cluster whose archive_command is the venv's
``walq put-wal``, and the archive service's own ExecStart line (from
deploy/systemd/walq-archive.service) run as postgres.

``test_systemd_units_verify`` runs ``systemd-analyze verify`` on every unit in
deploy/systemd/ (with /opt/walq/bin pointing at this venv, whose walq and celery
exist), or checks their keys where systemd-analyze is missing.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.config_file import write_walq_config
from tests.services.homes import VENV_BIN
from tests.services.pg import Cluster, as_postgres, chown_postgres
from tests.services.scratch import fresh_dir

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
README_PREFIX = "/opt/walq/bin/"  # where the README installs walq; the units use it


def clean_copy(dest: Path) -> Path:
    """The files a clone of this tree would have (tracked and new, not ignored), as they are
    in the working tree: no .venv, no egg-info, no build/ left by an editable install."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = raw.decode()
        src = REPO / rel
        if src.is_file() and not src.is_symlink():  # a deleted, still-tracked file is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def system_python() -> str:
    """The README's interpreter: the system python3, which the postgres user can run."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


def run(cmd: list[str], *, as_pg: bool = False, **kw) -> subprocess.CompletedProcess[str]:
    """Run a command from / with no PYTHONPATH, so nothing can come from this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [*(as_postgres() if as_pg else []), *cmd],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=600,
        **kw,
    )


def exec_start(unit: str) -> list[str]:
    """A unit's ExecStart= command line, split as systemd would (no specifiers used here)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[method-assign]  # keys as written: ExecStart
    parser.read(UNITS / unit)
    return shlex.split(parser["Service"]["ExecStart"])


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A venv holding walq installed from a wheel built from a clean copy; its bin/."""
    root = fresh_dir("install")
    try:
        src = clean_copy(root / "src")
        built = run([str(VENV_BIN / "pip"), "wheel", "--no-deps", "-q", "-w", str(root), str(src)])
        assert built.returncode == 0, built.stderr
        (wheel,) = root.glob("walq-*.whl")
        venv = root / "opt-walq"
        made = run([system_python(), "-m", "venv", str(venv)])
        assert made.returncode == 0, made.stderr
        pip = run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
        assert pip.returncode == 0, pip.stderr
        os.chmod(root, 0o755)
        yield venv / "bin"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_install_from_a_clean_copy_archives_as_postgres(installed: Path) -> None:
    walq = installed / "walq"
    from importlib.metadata import version

    res = run([str(walq), "--version"], as_pg=True)
    assert (res.returncode, res.stdout) == (0, f"walq {version('walq')}\n"), res.stderr
    where = run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('walq').origin); "
            "print(u.find_spec('workers').origin)",  # importing workers would load a config
        ]
    )
    origins = where.stdout.splitlines()
    assert len(origins) == 2, where
    for origin in origins:  # the venv's copies, not this checkout: non-editable
        assert origin.startswith(str(installed.parent)) and str(REPO) not in origin, where

    root = fresh_dir("install-pg")
    cluster = Cluster(root / "pg")
    try:
        (root / "home").mkdir()
        config = write_walq_config(root, {"pg1": {"compression": "zstd"}})
        chown_postgres(root / "home")
        command = f"{walq} --config {config} put-wal pg1 %p"  # the README's archive_command
        cluster.initdb(conf={"archive_mode": "on", "archive_command": f"'{command}'"}).start()
        cluster.psql("CREATE TABLE t AS SELECT generate_series(1, 10000) AS x")
        segment = cluster.switch_wal()
        cluster.wait_archived(segment)  # PostgreSQL ran the venv's walq as postgres: success
        assert (root / "home" / "pg1" / "incoming" / segment).exists()

        service = exec_start("walq-archive.service")  # what the timer runs, as its User=
        assert service[0] == f"{README_PREFIX}walq", service
        env_config = ["env", f"WALQ_CONFIG={config}"]
        res = run([*env_config, str(walq), *service[1:]], as_pg=True)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res
        rows = run([*env_config, str(walq), "list", "pg1", "--json"], as_pg=True)
        states = {r["name"]: r["state"] for r in json.loads(rows.stdout)}
        assert states.get(segment) == "archived", states
        assert not (root / "home" / "pg1" / "incoming" / segment).exists()
        res = run([*env_config, str(walq), "verify", "pg1"], as_pg=True)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- the systemd units ------------------------------------------------------------------


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))


def test_systemd_units_verify(workdir: Path) -> None:
    """Each unit parses, names an existing program, and says who runs it with which config."""
    names = {p.name for p in unit_files()}
    assert names >= {
        "walq-archive.service",
        "walq-archive.timer",
        "walq-receive-wal@.service",
        "walq-worker-cpu.service",
        "walq-worker-io.service",
        "walq-beat.service",
        "walq-flower.service",
        "walq-exporter.service",
    }, names
    readme = (REPO / "README.md").read_text()
    for path in unit_files():
        assert path.name in readme, f"README does not mention {path.name}"
        text = path.read_text()
        if path.suffix == ".service":
            assert "User=" in text and "Environment=WALQ_CONFIG=/etc/walq/walq.toml" in text
            assert exec_start(path.name)[0].startswith(README_PREFIX), path.name
        # systemd needs the programs to exist: point the units at this venv, which has both
        (workdir / path.name).write_text(text.replace(README_PREFIX, f"{VENV_BIN}/"))
    assert "EnvironmentFile=/etc/walq/flower.env" in (UNITS / "walq-flower.service").read_text()
    assert exec_start("walq-receive-wal@.service")[1:] == ["receive-wal", "%i"]

    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: the keys, at least, must be where systemd wants them
        for path in unit_files():
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.read(path)
            kind = "Service" if path.suffix == ".service" else "Timer"
            assert parser.has_section("Unit") and parser.has_section(kind), path.name
        return
    res = subprocess.run(
        [analyze, "verify", *(str(workdir / p.name) for p in unit_files())],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert (res.returncode, res.stderr) == (0, ""), res.stderr  # warnings too: unknown keys …


def test_systemd_units_run_the_procfile_commands() -> None:
    """The fleet units start the processes the Procfile does (same queues and pools)."""
    procfile = (REPO / "Procfile").read_text()
    for unit, queues, pool in (
        ("walq-worker-cpu.service", "walq.cpu", "prefork"),
        ("walq-worker-io.service", "walq.scan,walq.io", "threads"),
    ):
        argv = exec_start(unit)
        assert argv[1:4] == ["-A", "workers", "worker"], argv
        assert argv[argv.index("-Q") + 1] == queues and argv[argv.index("--pool") + 1] == pool
        assert f"-Q {queues} --pool {pool}" in procfile
    assert exec_start("walq-beat.service")[1:4] == ["-A", "workers", "beat"]
    assert exec_start("walq-flower.service")[1:4] == ["-A", "workers", "flower"]
    assert exec_start("walq-exporter.service")[1:3] == ["exporter", "--listen"]
    assert "exporter: walq exporter --listen" in procfile
