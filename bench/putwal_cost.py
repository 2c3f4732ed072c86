"""put-wal's CPU per call beside its floor (issue 16: within 2x of start + copy + fsync).

PostgreSQL runs archive_command once per segment, one at a time, so what one call
costs bounds a server's archiving. Each row is the median CPU (user + system of
the child and what it waited for, from getrusage) of one process per segment:

- ``python -c pass``: walq's interpreter starting and exiting;
- ``cp + sync``: ``cp SEG DIR/ && sync DIR/SEG`` (the bytes copied and fsynced);
- ``walq put-wal``: the console script (its fast path, walq.archive.putwal_fast);
- ``walq put-wal (full CLI)``: the same call sent to the full CLI (a WALQ_* variable
  the fast path leaves to pydantic-settings), i.e. what every call cost before;
- with pgBackRest installed and the cluster's control data at hand (the corpus's
  ``pgdata``): ``pgbackrest archive-push`` async with a spool (archive-async=y,
  zstd-3, as bench.runners drives it), the call PostgreSQL waits for; and, from a
  second pass with its cgroup, the whole push including the async process that
  compresses and stores, divided by the calls (a mean, not a median).

The rows run interleaved, one segment at a time in a rotating order, each segment
read once before into the page cache: on a shared machine a change of load then
touches every row alike. The floor is ``python -c pass`` + ``cp + sync``.

Bytecode: ``cached`` (the default) is a normal install, where pip compiled walq's
.pyc files: Python's children write and read them under a fresh
PYTHONPYCACHEPREFIX, after one untimed call per row. ``none`` compiles walq's
sources on every call, as PYTHONDONTWRITEBYTECODE=1 with no .pyc beside them does
(the stdlib still reads its installed .pyc). Run alone:
``.venv/bin/python -m bench.putwal_cost SEGMENT_DIR [--calls N] [--pgdata DIR]
[--bytecode cached|none]`` (SEGMENT_DIR is a corpus's ``wal`` directory:
``--pgdata`` defaults to its sibling).
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
WALQ = REPO / ".venv" / "bin" / "walq"
PGBR_CALL = "pgbackrest archive-push (async, zstd-3): the call"
PGBR_TOTAL = "pgbackrest archive-push (async, zstd-3): per call incl. its async process"


def _cpu_of(cmd: list[str], env: dict[str, str] | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _walq_home(scratch: Path, name: str) -> Path:
    home = scratch / name
    home.mkdir(parents=True)
    config = home / "walq.toml"
    config.write_text(f'home = "{home / "home"}"\n\n[servers.bench]\ncompression = "zstd"\n')
    return config


def _wait_gone(marker: str, timeout: float = 60) -> None:
    """Until no process has ``marker`` on its command line (pgBackRest's async process
    exits by itself once its queue is empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    busy = busy or marker.encode() in f.read()
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.05)


def _pgbackrest_ctx(segment_dir: Path, segments: list[str], pgdata: Path, scratch: Path):
    from bench.corpus import Corpus
    from bench.runners import Ctx

    seg_size = (segment_dir / segments[0]).stat().st_size
    return Ctx(Corpus(segment_dir, segments, 0, seg_size, pgdata), scratch, scratch)


def _python_env(scratch: Path, bytecode: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WALQ_CONFIG", "WALQ_HOME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    if bytecode == "cached":
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if next((REPO / "walq").rglob("__pycache__"), None):
            raise SystemExit("--bytecode none: remove the __pycache__ directories under walq/")
    return env


def measure(
    segment_dir: Path,
    segments: list[str],
    scratch: Path,
    pgdata: Path | None = None,
    bytecode: str = "cached",
) -> dict[str, object]:
    """Median CPU seconds per call for each row, over ``segments`` (one call each);
    the pgBackRest rows where ``pgdata`` is given and pgbackrest is installed."""
    calls = {
        "python -c pass": lambda name: [str(PYTHON), "-c", "pass"],
        "cp + sync": lambda name: [
            "sh",
            "-c",
            f'cp "$1" "$2/" && sync "$2/{name}"',
            "sh",
            str(segment_dir / name),
            str(copies),
        ],
        "walq put-wal": lambda name: [
            str(WALQ),
            "--config",
            str(fast),
            "put-wal",
            "bench",
            str(segment_dir / name),
        ],
        "walq put-wal (full CLI)": lambda name: [
            str(WALQ),
            "--config",
            str(full),
            "put-wal",
            "bench",
            str(segment_dir / name),
        ],
    }
    py_env = _python_env(scratch, bytecode)
    env = {
        "python -c pass": py_env,
        "walq put-wal": py_env,
        # a WALQ_* variable the fast path leaves to pydantic-settings: the full CLI
        "walq put-wal (full CLI)": dict(py_env, WALQ_GROUP_ACCESS="false"),
    }
    fast, full = _walq_home(scratch, "fast"), _walq_home(scratch, "full")
    copies = scratch / "cp"
    copies.mkdir()
    for row in env:  # untimed: writes the .pyc files in "cached" mode
        _cpu_of(calls[row](segments[0]), env=env[row])
    shutil.rmtree(fast.parent / "home")
    shutil.rmtree(full.parent / "home")
    ctx = None
    if pgdata is not None and shutil.which("pgbackrest"):
        from bench import runners

        ctx = _pgbackrest_ctx(segment_dir, segments, pgdata, scratch / "pgbr")
        pgbr, wal, _ = runners.pgbackrest_stanza(ctx, ctx.fresh("call"), "zstd", 3)
        ctx.corpus.link_into(wal)
        for name in segments:
            (wal / "archive_status" / f"{name}.ready").touch()

        def push(name: str) -> list[str]:
            return [*pgbr, "archive-push", str(wal / name)]

        calls[PGBR_CALL] = push
    rows: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for i, name in enumerate(segments):
        (segment_dir / name).read_bytes()  # into the page cache: no row pays for the disk
        for row in order[i % len(order) :] + order[: i % len(order)]:
            rows[row].append(_cpu_of(calls[row](name), env=env.get(row)))
            if row == PGBR_CALL:
                status = wal / "archive_status"
                os.rename(status / f"{name}.ready", status / f"{name}.done")
    for d in (fast.parent, full.parent, copies):
        shutil.rmtree(d)
    medians = {k: statistics.median(v) for k, v in rows.items()}
    total_source = None
    if ctx is not None:
        _wait_gone(str(ctx.scratch))
        run = runners.pgbackrest_push(ctx, "zstd", 3)
        assert run.sample.cpu is not None
        medians[PGBR_TOTAL] = run.sample.cpu / run.segments
        total_source = run.sample.cpu_source  # "rusage" would miss the async process
        _wait_gone(str(ctx.scratch))
        shutil.rmtree(ctx.scratch)
    floor = medians["python -c pass"] + medians["cp + sync"]
    return {
        "calls": len(segments),
        "seg_size": (segment_dir / segments[0]).stat().st_size,
        "cpu_s": medians,
        "floor_s": floor,
        "ratio_to_floor": medians["walq put-wal"] / floor if floor else None,
        "pgbackrest_total_cpu_source": total_source,
        "bytecode": bytecode,
    }


def text(result: dict[str, object]) -> list[str]:
    """Markdown lines for docs/benchmarks.md (bench/publish.py)."""
    cpu = result["cpu_s"]
    assert isinstance(cpu, dict)
    mib = int(result["seg_size"]) >> 20  # type: ignore[call-overload]
    lines = [
        f"**put-wal, CPU per call** ({result['calls']} calls, one {mib} MiB segment each; "
        f"median; bytecode {result.get('bytecode', 'cached')}; "
        "target: within 2x of start + copy + fsync)",
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
    if PGBR_CALL in cpu:
        lines[-1] += (
            f" walq put-wal / pgBackRest's async call = {cpu['walq put-wal'] / cpu[PGBR_CALL]:.2f}x"
            " (pgBackRest compresses and stores in its async process; walq in `walq archive`)."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("segment_dir", type=Path)
    ap.add_argument("--calls", type=int, default=9)
    ap.add_argument("--pgdata", type=Path, help="the cluster's control data, for pgBackRest")
    ap.add_argument("--bytecode", choices=("cached", "none"), default="cached")
    args = ap.parse_args(argv)
    pgdata = args.pgdata or args.segment_dir.parent / "pgdata"
    names = sorted(p.name for p in args.segment_dir.iterdir() if len(p.name) == 24)[: args.calls]
    if not names:
        print(f"no WAL segments in {args.segment_dir}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="walq-putwal-") as scratch:
        result = measure(
            args.segment_dir,
            names,
            Path(scratch),
            pgdata if pgdata.is_dir() else None,
            args.bytecode,
        )
    print(json.dumps(result, indent=2))
    print("\n".join(text(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
