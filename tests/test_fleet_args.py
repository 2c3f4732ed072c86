"""Tasks called with made-up arguments (as anyone with Flower or broker access can)
are refused with a clear error by a real worker and touch nothing: unknown
servers, ``../`` paths, names that are not WAL names, payloads outside the spool."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from tests.services.fleet import (
    celery_client,
    pending,
)
from walq.archive.job import WalJob as StageArgs
from walq.catalog import open_catalog
from walq.errors import TaskArgumentError
from walq.fleet.args import parse_args

W = "000000010000000000000006"
CHAIN = uuid.uuid4().hex


def _job(home, **changes: object) -> dict[str, object]:
    job = {
        "server": "pg1",
        "wal": W,
        "source": str(home.incoming() / W),
        "origin": "incoming",
        "chain": CHAIN,
    }
    return {**job, **changes}


def _cases(home, secret: Path) -> list[tuple[str, list[object], str]]:
    spool = home.home / "spool" / "pg1" / CHAIN
    prepared = {
        **_job(home),
        "payload": str(spool / f"{W}.zst"),
        "codec": "zstd",
        "encrypted": False,
        "size": 1,
        "checksum": "0" * 64,
        "mtime": 0.0,
    }
    return [
        ("walq.scan_server", ["ghost"], "unknown server 'ghost'"),
        ("walq.retry_failed", ["../pg1"], "server name '../pg1' is invalid"),
        ("walq.retry_wal", ["ghost", W], "unknown server 'ghost'"),
        ("walq.retry_wal", ["pg1", "../../etc/passwd"], "not a WAL"),
        ("walq.retry_wal", ["pg1", "notawal"], "not a WAL"),
        (
            "walq.compress",
            [_job(home, source=str(secret))],
            "is not 000000010000000000000006 in pg1's incoming directory",
        ),
        (
            "walq.compress",
            [_job(home, source=f"{home.incoming()}/../../../{W}")],
            "normalized absolute path",
        ),
        ("walq.compress", [_job(home, wal="../" + W)], "not a WAL"),
        ("walq.compress", [_job(home, chain="../../etc")], "chain must be 32 lowercase hex digits"),
        ("walq.compress", [_job(home, server="ghost")], "unknown server 'ghost'"),
        ("walq.compress", [_job(home, extra="x")], "unknown argument"),
        ("walq.compress", ["not a dict"], "expects a JSON object"),
        (
            "walq.store",
            [{**prepared, "payload": str(secret)}],
            "outside this WAL's spool directory",
        ),
        (
            "walq.commit",
            [{**prepared, "payload": f"{spool}/../../{W}.zst"}],
            "normalized absolute path",
        ),
    ]


def test_made_up_task_arguments_are_refused_and_touch_nothing(
    fleet_home, workdir: Path, wal_corpus, fleet_factory
) -> None:
    home = fleet_home()
    secret = workdir / W
    secret.write_bytes(b"an operator's file that happens to have a WAL name")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    wal_corpus.copy_into(home.incoming(), [W])
    fleet = fleet_factory(home.config_path)
    fleet.worker("w1")  # no beat: nothing but our calls runs
    client = celery_client(home.config_path)
    for name, args, expected in _cases(home, secret):
        result = client.send_task(name, args=args)
        result.get(timeout=60, propagate=False)
        assert result.state == "FAILURE", (name, args, result.state, result.result)
        assert "refused" in str(result.result) and expected in str(result.result), (
            name,
            str(result.result),
        )
    catalog = open_catalog(home.config)
    try:
        assert catalog.counts("pg1") == {"claimed": 0, "archived": 0, "failed": 0, "expired": 0}
        assert catalog.records("ghost") == []
    finally:
        catalog.close()
    assert pending(home.incoming()) == [W]
    assert pending(home.errors()) == []
    assert hashlib.sha256(secret.read_bytes()).hexdigest() == digest
    assert "Retry in" not in fleet.logs(tail=0), "a refused call must not be retried"


@pytest.mark.parametrize(
    "data",
    [
        {"server": "pg1"},
        {"server": "pg1", "wal": W, "source": "x", "origin": "elsewhere", "chain": CHAIN},
    ],
)
def test_stage_arguments_validate_without_a_broker(walq_home, data: dict[str, object]) -> None:
    with pytest.raises(TaskArgumentError, match="refused"):
        parse_args(StageArgs, walq_home.config, data)
