"""Write the generated part of docs/benchmarks.md (between markers) and the chart.

Everything outside the markers is written by people (analysis, profiles, bounds)
and is kept as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
PNG = REPO / "docs" / "benchmarks.png"
START = "<!-- bench:generated:start -->"
END = "<!-- bench:generated:end -->"


def generated(data: dict, table_md: str, targets_md: str) -> str:
    m = data["machine"]
    extra = data.get("extra", {})
    lines = [
        START,
        f"Measured {data['when']} in {data['duration_s'] / 60:.0f} minutes with `{data['command']}` "
        f"(walq commit `{m['walq_commit']}`).",
        "",
        f"**Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}, file system `{m['filesystem']}`. {m['postgresql']}, "
        f"{m['pgbackrest']}, {' '.join(m['barman']) if isinstance(m['barman'], list) else m['barman']}, "
        f"SeaweedFS {m['weed']}, Python {m['python']} ({m['libs']}).",
        "",
        f"**Corpus**: {data['corpus']['segments']} real 16 MiB segments from a pgbench cluster; "
        f"{data['rounds']} rounds per tool, alternating, each on a fresh copy."
        + (
            f" Tools that start one process per WAL ran on {data['per_wal_limit']} consecutive segments "
            "from the middle of the corpus."
            if data.get("per_wal_limit")
            else ""
        ),
        "",
        table_md,
        "",
        "**Targets**",
        "",
        targets_md,
    ]
    if "python_startup_s" in extra:
        lines += [
            "",
            f"A bare `python -c pass` with walq's interpreter takes {extra['python_startup_s'] * 1000:.0f} ms "
            "here (the floor for one restore_command call).",
        ]
    if "put_wal" in extra:
        from bench.putwal_cost import text as putwal_text

        lines += ["", *putwal_text(extra["put_wal"])]
    if "sustained" in extra:
        from bench.bench import sustained_text

        lines += [
            "",
            "**Sustained load** (fleet, `scan_interval = 0.5`; target: 10 segments/s with archive lag p99 "
            "under 2 s)",
            "",
            sustained_text(extra["sustained"], markdown=True),
        ]
    lines += ["", "![segments/s per tool and codec](benchmarks.png)", END]
    return "\n".join(lines)


def write_docs(data: dict, table_md: str, targets_md: str, chart: Path | None) -> None:
    body = generated(data, table_md, targets_md)
    if DOC.exists() and START in DOC.read_text():
        text = DOC.read_text()
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        DOC.write_text(head + body + tail)
    else:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text("# Benchmarks\n\n" + body + "\n")
    if chart is not None:
        shutil.copyfile(chart, PNG)
