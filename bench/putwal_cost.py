"""put-wal's CPU per call beside its floor (issue 16: within 2x of start + copy + fsync).

PostgreSQL runs archive_command once per segment, one at a time, so what one call
costs bounds a server's archiving. Each row is the median CPU (user + system of
the child and what it waited for, from getrusage) of one process per segment:

- ``python -c pass``: walq's interpreter starting and exiting;
- ``cp + sync``: ``cp SEG DIR/ && sync DIR/SEG`` (the bytes copied and fsynced);
- ``walq put-wal``: the console script (its fast path, walq.archive.putwal_fast);
- ``walq put-wal (full CLI)``: the same call sent to the full CLI (a WALQ_* variable
  the fast path leaves to pydantic-settings), i.e. what every call cost before.

The floor is ``python -c pass`` + ``cp + sync``. Run alone:
``.venv/bin/python -m bench.putwal_cost SEGMENT_DIR [--calls N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
WALQ = REPO / ".venv" / "bin" / "walq"


def _cpu_of(cmd: list[str], env: dict[str, str] | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(segment_dir: Path, segments: list[str], scratch: Path) -> dict[str, object]:
    """Median CPU seconds per call for each row, over ``segments`` (one call each)."""
    rows: dict[str, list[float]] = {
        "python -c pass": [],
        "cp + sync": [],
        "walq put-wal": [],
        "walq put-wal (full CLI)": [],
    }
    env_full = dict(os.environ, WALQ_GROUP_ACCESS="false")  # sends put-wal to the full model
    for round_name, env in (("walq put-wal", None), ("walq put-wal (full CLI)", env_full)):
        home = scratch / round_name.replace(" ", "-").replace("(", "").replace(")", "")
        config = home / "walq.toml"
        home.mkdir(parents=True)
        config.write_text(f'home = "{home / "home"}"\n\n[servers.bench]\ncompression = "zstd"\n')
        for name in segments:
            cpu = _cpu_of(
                [str(WALQ), "--config", str(config), "put-wal", "bench", str(segment_dir / name)],
                env=env,
            )
            rows[round_name].append(cpu)
        shutil.rmtree(home)
    copies = scratch / "cp"
    copies.mkdir()
    for name in segments:
        rows["python -c pass"].append(_cpu_of([str(PYTHON), "-c", "pass"]))
        script = f'cp "$1" "$2/" && sync "$2/{name}"'
        rows["cp + sync"].append(
            _cpu_of(["sh", "-c", script, "sh", str(segment_dir / name), str(copies)])
        )
    shutil.rmtree(copies)
    medians = {k: statistics.median(v) for k, v in rows.items()}
    floor = medians["python -c pass"] + medians["cp + sync"]
    return {
        "calls": len(segments),
        "seg_size": (segment_dir / segments[0]).stat().st_size,
        "cpu_s": medians,
        "floor_s": floor,
        "ratio_to_floor": medians["walq put-wal"] / floor if floor else None,
    }


def text(result: dict[str, object]) -> list[str]:
    """Markdown lines for docs/benchmarks.md (bench/publish.py)."""
    cpu = result["cpu_s"]
    assert isinstance(cpu, dict)
    mib = int(result["seg_size"]) >> 20  # type: ignore[call-overload]
    lines = [
        f"**put-wal, CPU per call** ({result['calls']} calls, one {mib} MiB segment each; "
        "median; target: within 2x of start + copy + fsync)",
        "",
        "| call | CPU per call |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v * 1000:.1f} ms |" for k, v in cpu.items()]
    lines += [
        f"| floor: `python -c pass` + `cp + sync` | {float(result['floor_s']) * 1000:.1f} ms |",  # type: ignore[arg-type]
        "",
        f"walq put-wal / floor = {result['ratio_to_floor']:.2f}x.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("segment_dir", type=Path)
    ap.add_argument("--calls", type=int, default=9)
    args = ap.parse_args(argv)
    names = sorted(p.name for p in args.segment_dir.iterdir() if len(p.name) == 24)[: args.calls]
    if not names:
        print(f"no WAL segments in {args.segment_dir}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="walq-putwal-") as scratch:
        result = measure(args.segment_dir, names, Path(scratch))
    print(json.dumps(result, indent=2))
    print("\n".join(text(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
