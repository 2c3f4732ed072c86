"""Refusals echo what was wrong, but never more than a bounded piece of it: a 20 MB
task argument must not become 40 MB in the result backend and the worker log, nor
a 1 MB config value a 1 MB error line (walq.errors.clip, used wherever input is
echoed)."""

from __future__ import annotations

from pathlib import Path

from tests.services.fleet import (
    celery_client,
)
from tests.services.homes import WalqHome
from walq.archive.job import WalJob as StageArgs
from walq.errors import TaskArgumentError
from walq.fleet.args import parse_args

HUGE = 20 << 20
BOUND = 1024
W = "000000010000000000000006"


def _huge_calls(home: WalqHome) -> list[tuple[str, list[object]]]:
    job = {
        "server": "pg1",
        "wal": W,
        "source": str(home.incoming() / W),
        "origin": "incoming",
        "chain": "a" * 32,
    }
    return [
        ("walq.compress", [{**job, "wal": "0" * HUGE}]),
        ("walq.compress", [{**job, "source": "/" + "s" * HUGE}]),
        ("walq.compress", [{**job, "k" * HUGE: 1}]),
        ("walq.scan_server", ["p" * HUGE]),
        ("walq.retry_wal", ["pg1", "F" * HUGE]),
    ]


def test_a_20_mb_task_argument_gives_a_short_refusal(
    fleet_home, redis_server, fleet_factory
) -> None:
    home = fleet_home()
    fleet = fleet_factory(home.config_path)
    worker = fleet.worker("w1")
    client = celery_client(home.config_path)
    backend = redis_server.client(0)
    log_before = len(worker.output())
    for name, args in _huge_calls(home):
        result = client.send_task(name, args=args)
        result.get(timeout=120, propagate=False)
        assert result.state == "FAILURE", (name, result.state)
        message = str(result.result)
        assert "refused" in message or "invalid" in message, message[:300]
        assert len(message) < BOUND, (name, len(message), message[:300])
        stored = backend.get(f"celery-task-meta-{result.id}")
        assert stored is not None and len(stored) < 8 * BOUND, (name, len(stored or b""))
    grown = len(worker.output()) - log_before
    assert grown < 64 * BOUND, f"the worker logged {grown} bytes for five refusals"


def test_parse_args_bounds_many_made_up_arguments(walq_home: WalqHome) -> None:
    data = {"server": "pg1", "wal": "x" * 1_000_000, **{f"extra{i}" * 1000: i for i in range(1000)}}
    try:
        parse_args(StageArgs, walq_home.config, data)
    except TaskArgumentError as exc:
        assert len(str(exc)) < BOUND and "more" in str(exc), str(exc)[:300]
    else:
        raise AssertionError("not refused")


def test_a_1_mb_config_value_gives_a_short_error_line(workdir: Path) -> None:
    home = workdir / "home"
    home.mkdir()
    cases = [
        f'home = "{home}"\n[servers.pg1]\ncompression = "{"z" * (1 << 20)}"\n',
        f'home = "{home}"\n{"k" * (1 << 20)} = 1\n[servers.pg1]\n',
        f'home = "{home}"\n[servers."{"n" * (1 << 20)}"]\n',
    ]
    for text in cases:
        config = workdir / "walq.toml"
        config.write_text(text)
        res = WalqHome(workdir, config).run("status")
        assert res.returncode == 2, (res.returncode, res.stderr[:300])
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < BOUND, (len(res.stderr), res.stderr[:300])
        assert "bytes)" in lines[0], lines[0]


def test_a_long_cli_argument_gives_a_short_error_line(walq_home: WalqHome, workdir: Path) -> None:
    for args in (
        ("get-wal", "pg1", "0" * 100_000, str(workdir / "x")),
        ("list", "p" * 100_000),
        ("get-wal", "pg1", "0" * 24, str(workdir / "x"), "--prefetch", "9" * 100_000 + "x"),
        ("c" * 100_000,),
    ):
        res = walq_home.run(*args)
        assert res.returncode == 2, (res.returncode, res.stderr[:300])
        assert len(res.stderr.strip().splitlines()[-1]) < BOUND and len(res.stderr) < 2 * BOUND, (
            res.stderr[:300]
        )
        assert "bytes)" in res.stderr or "characters)" in res.stderr, res.stderr[:300]
