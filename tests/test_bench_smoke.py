"""The benchmark harness runs end to end in its quick mode on a tiny corpus, and
bench.fleet_scale (many servers, sustained) runs on three servers for ~10 s.

walq-only rows (no Barman or pgBackRest download), one round, four segments;
it checks that the harness produces its table and JSON, never how fast
anything is (no timed assertions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_walq_only(tmp_path: Path) -> None:
    out = tmp_path / "results"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench.py"),
            "--quick",
            "--walq-only",
            "--segments",
            "4",
            "--only",
            "local",
            "codec",
            "putwal",
            "--codecs",
            "zstd-3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "walq archive" in res.stdout and "codec alone" in res.stdout
    data = json.loads((out / "results.json").read_text())
    series = {(s["scenario"], s["tool"], s["codec"]): s for s in data["series"]}
    walq = series[("local", "walq archive", "zstd-3")]
    assert walq.get("error") is None and walq["segments"] == 4 and walq["rounds"] == 1
    assert walq["seg_per_s"] > 0 and walq["peak_rss_mib"] > 0
    assert series[("limit", "codec alone", "zstd-3")]["seg_per_s"] > 0
    ratios = [
        c for c in data["comparisons"] if c["label"].startswith("walq archive vs the codec alone")
    ]
    assert ratios and ratios[0]["ratio"] is not None
    put_wal = data["extra"]["put_wal"]
    assert put_wal["calls"] == 4 and put_wal["floor_s"] > 0
    assert set(put_wal["cpu_s"]) >= {"python -c pass", "cp + sync", "walq put-wal"}


def test_fleet_scale_plan_round_robin() -> None:
    """Each server gets every n-th file, its names increasing; too few segments is refused."""
    from bench.fleet_scale import plan_feed

    plan = plan_feed(["a", "b", "c"], ["01", "02", "03"], 7)
    assert [server for server, _ in plan] == ["a", "b", "c", "a", "b", "c", "a"]
    assert [name for server, name in plan if server == "a"] == ["01", "02", "03"]
    with pytest.raises(ValueError, match="4 segments per server"):
        plan_feed(["a", "b"], ["01", "02", "03"], 7)


def test_fleet_scale_small_run(wal_corpus, tmp_path: Path) -> None:
    """bench.fleet_scale end to end on 3 servers for ~10 s: every fed WAL archived and
    the load counters reported (counts only; how fast is the bench's business)."""
    from bench.fleet_scale import run

    row = run(
        3,
        3.0,
        10.0,
        wal_corpus.directory,
        wal_corpus.segments,
        tmp_path,
        scan_interval=1.0,
        drain=120.0,
        sample=2.0,
    )
    assert row["fed"] == 30 and row["archived"] == 30 and row["not_archived"] == 0
    assert row["celery_tasks"]["walq.compress"] == 30
    assert row["celery_tasks"]["walq.store"] >= 30
    assert row["lag_p50_s"] is not None and row["lag_p99_s"] >= row["lag_p50_s"]
    assert 0 < row["redis_commands_per_wal"] < 500
    assert 0 < row["catalog_transactions_per_wal"] < 50
    assert row["series"] and all(s["redis_commands_per_s"] >= 0 for s in row["series"])
