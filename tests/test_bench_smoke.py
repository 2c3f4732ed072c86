"""The benchmark harness runs end to end in its quick mode on a tiny corpus.

walq-only rows (no Barman or pgBackRest download), one round, four segments;
it checks that the harness produces its table and JSON, never how fast
anything is (no timed assertions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
