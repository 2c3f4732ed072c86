"""The fleet's deployment files: compose/docker-compose.yml parses, every service
command names a real entry point (``celery -A workers <worker|beat|flower>`` that
loads, or a ``walq`` subcommand the CLI accepts), and the Procfile does the same.
Docker does not run here, so these are checked by parsing, as design.md says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.services.config_file import write_walq_config
from tests.services.fleet import CELERY, REPO
from walq.cli import build_parser

COMPOSE = REPO / "compose" / "docker-compose.yml"
PROCFILE = REPO / "Procfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def fleet_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compose")
    return write_walq_config(
        root,
        {"pg1": {}},
        broker_url="redis://127.0.0.1:1/0",
        catalog_url="postgresql://walq@127.0.0.1:1/walq",
    )


@pytest.mark.parametrize("sub", ["worker", "beat"])
def test_a_fleet_without_a_catalog_url_is_refused_in_one_line(sub: str, tmp_path: Path) -> None:
    """SQLite is embedded mode's catalog; the io worker's threads cannot share it."""
    config = write_walq_config(tmp_path, {"pg1": {}}, broker_url="redis://127.0.0.1:1/0")
    env = {**os.environ, "WALQ_CONFIG": str(config), "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [str(CELERY), "-A", "workers", sub, "--loglevel", "INFO"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert lines and "catalog_url is not set" in lines[-1], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def _check_command(argv: list[str], config: Path) -> None:
    if argv[0] == "walq":
        build_parser().parse_args(argv[1:])  # SystemExit on an unknown subcommand
        return
    assert argv[:3] == ["celery", "-A", "workers"], argv
    sub = argv[3]
    assert sub in {"worker", "beat", "flower"}, argv
    # The app really loads and the subcommand exists (``--help`` imports workers and exits 0).
    env = {
        **os.environ,
        "WALQ_CONFIG": str(config),
        "FLOWER_BASIC_AUTH": "u:p",
        "PYTHONPATH": str(REPO),
    }
    res = subprocess.run(
        [str(CELERY), "-A", "workers", sub, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    if sub == "worker" and "-Q" in argv:
        queues = set(argv[argv.index("-Q") + 1].split(","))
        assert queues <= {"walq.scan", "walq.cpu", "walq.io"}, queues


def test_compose_services_and_commands(compose: dict, fleet_config: Path) -> None:
    services = compose["services"]
    assert {
        "redis",
        "postgres",
        "s3",
        "worker-cpu",
        "worker-io",
        "beat",
        "flower",
        "exporter",
    } <= set(services)
    seen = {}
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        command = service.get("command")
        if command and service.get("build"):
            argv = command if isinstance(command, list) else shlex.split(command)
            seen.setdefault(tuple(argv[:4]), name)
            _check_command(argv, fleet_config)
    assert ("celery", "-A", "workers", "beat") in seen and (
        "celery",
        "-A",
        "workers",
        "flower",
    ) in seen
    assert services["worker-cpu"]["deploy"]["replicas"] >= 1  # scalable workers
    for name in ("worker-cpu", "worker-io", "beat"):
        assert "walq-data:/var/lib/walq" in services[name]["volumes"], (
            f"{name} misses the shared volume"
        )
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )
    assert "--appendonly" in services["redis"]["command"]
    dockerfile = REPO / services["worker-cpu"]["build"]["dockerfile"]
    assert dockerfile.is_file()


def entry_points(command: str) -> list[list[str]]:
    """The walq/celery command lines in a Procfile entry, also inside a small shell snippet."""
    found, current = [], None
    command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command)  # ${VAR:-default}: its default
    for token in shlex.split(command.replace(";", " ; ")):
        if current is None and token in ("celery", "walq"):
            current = [token]
        elif current is not None and token in (";", "fi", "then", "else", "&&", "||"):
            found.append(current)
            current = None
        elif current is not None:
            current.append(token)
    if current:
        found.append(current)
    return found


def test_procfile_entries(fleet_config: Path) -> None:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name] = entry_points(command)
    assert {"cpu", "io", "beat", "flower", "exporter"} <= set(entries)
    for name, argvs in entries.items():
        assert argvs, f"Procfile entry {name} runs neither walq nor celery"
        for argv in argvs:
            _check_command(argv, fleet_config)
    assert "FLOWER_BASIC_AUTH" in PROCFILE.read_text()


def test_honcho_reads_the_procfile() -> None:
    res = subprocess.run(
        [str(CELERY.parent / "honcho"), "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
