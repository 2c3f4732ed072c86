"""What one get-wal spool hit costs: the figures in docs/benchmarks.md (issue 11).

    .venv/bin/python bench/spool_hit.py [--files 200] [--size-mib 1] [--base DIR]

Builds a throwaway home (a config and a restore spool holding ``--files`` WAL
segments of ``--size-mib`` MiB each) and serves every segment the way PostgreSQL's
restore_command does: one process per call, ``walq --config C get-wal pg1 NAME
DEST``. It prints the median and p90 wall time per call and how many modules a
call imports (``python -X importtime``).

``--base DIR`` also times another walq source tree (say a ``git archive`` of an
older commit) against this one, each through a copy of this venv's ``walq``
console script whose import line names the tree's entry point (``walq.main`` or,
before issue 11, ``walq.fastpath``); the installed script is timed too. The
variants are interleaved call by call, each in turn first (ABC BCA CAB ...), so
drift on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = "pg1"


def segment(i: int) -> str:
    return f"00000001{i // 256:08X}{i % 256:08X}"


def console_script(tree: Path, out: Path) -> Path:
    """A copy of this venv's ``walq`` script that imports walq from ``tree``."""
    script = Path(sys.executable).with_name("walq").read_text()
    entry = "walq.main" if (tree / "walq" / "main.py").is_file() else "walq.fastpath"
    import_line = next(line for line in script.splitlines() if line.startswith("from walq."))
    script = script.replace(
        import_line, f"sys.path.insert(0, {str(tree)!r})\nfrom {entry} import main"
    )
    out.write_text(script)
    out.chmod(0o755)
    return out


def module_count(cmd: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Modules a call imports after interpreter start-up, and the walq ones among them."""
    res = subprocess.run(
        cmd, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise SystemExit(f"{cmd}: exit {res.returncode}: {res.stderr[-500:]}")
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:")
    ]
    names = [n for n in names if n != "package"]  # the header line
    return len(names), [n for n in names if n.startswith("walq")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200, help="spool hits per variant")
    ap.add_argument("--size-mib", type=int, default=1)
    ap.add_argument("--base", type=Path, help="another walq source tree to time against this one")
    ap.add_argument(
        "--bytecode",
        choices=("cached", "none"),
        default="cached",
        help="cached: .pyc written by a first call and read after (a normal install); "
        "none: every call compiles (PYTHONDONTWRITEBYTECODE, or a tree it cannot write)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="walq-spool-hit-") as tmp:
        root = Path(tmp)
        home = root / "home"
        spool = home / "restore-spool" / SERVER
        spool.mkdir(parents=True)
        (root / "wals").mkdir()
        config = root / "walq.toml"
        config.write_text(
            f'home = "{home}"\n\n[servers.{SERVER}]\nstorage_url = "file://{root / "wals"}"\n'
        )
        dest = root / "RECOVERYXLOG"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("WALQ_CONFIG", "WALQ_HOME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        }
        if (
            args.bytecode == "cached"
        ):  # .pyc files (stdlib's too) go to a fresh prefix, not into the trees
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        else:  # walq compiles on every call; the stdlib still reads its installed .pyc
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            trees = [REPO] + ([args.base] if args.base is not None else [])
            if any(next((t / "walq").rglob("__pycache__"), None) for t in trees):
                raise SystemExit(
                    "--bytecode none: remove the __pycache__ directories under walq/ first"
                )

        variants = {"installed": [str(Path(sys.executable).with_name("walq"))]}
        if (
            args.base is not None
        ):  # the same script shape for both trees; "installed" is the real one
            variants = {
                "base": [str(console_script(args.base.resolve(), root / "walq-base"))],
                "this tree": [str(console_script(REPO, root / "walq-this"))],
                **variants,
            }

        payload = b"\0" * (args.size_mib << 20)
        times: dict[str, list[float]] = {label: [] for label in variants}
        labels = list(variants)
        n = 0
        for cmd in variants.values():  # untimed: writes the .pyc files in "cached" mode
            (spool / segment(n)).write_bytes(payload)
            subprocess.run(
                [*cmd, "--config", str(config), "get-wal", SERVER, segment(n), str(dest)],
                env=env,
                capture_output=True,
                check=True,
            )
            n += 1
        for i in range(args.files):
            order = (
                labels[i % len(labels) :] + labels[: i % len(labels)]
            )  # each variant in each position
            for label in order:
                name = segment(n)
                n += 1
                (spool / name).write_bytes(payload)
                cmd = [
                    *variants[label],
                    "--config",
                    str(config),
                    "get-wal",
                    SERVER,
                    name,
                    str(dest),
                ]
                t0 = time.perf_counter()
                res = subprocess.run(cmd, env=env, capture_output=True)
                times[label].append(time.perf_counter() - t0)
                if res.returncode != 0 or (spool / name).exists():
                    raise SystemExit(
                        f"{label}: {name} was not a spool hit: {res.stderr.decode()[-500:]}"
                    )

        print(
            f"{args.files} spool hits per variant, {args.size_mib} MiB each, one process per call, "
            f"bytecode {args.bytecode}"
        )
        print(
            f"{'entry point':<12} {'median ms':>10} {'p90 ms':>8} {'vs base':>8} {'modules':>8}  walq modules"
        )
        for label, cmd in variants.items():
            name = segment(n)
            n += 1
            (spool / name).write_bytes(payload)
            count, walq_mods = module_count(
                [*cmd, "--config", str(config), "get-wal", SERVER, name, str(dest)], env
            )
            ms = sorted(t * 1000 for t in times[label])
            p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
            delta = f"{'':>8}"
            if (
                "base" in times and label != "base"
            ):  # median of the differences of calls run back to back
                pairs = zip(times[label], times["base"], strict=True)
                delta = f"{statistics.median(1000 * (t - b) for t, b in pairs):+8.2f}"
            print(
                f"{label:<12} {statistics.median(ms):>10.2f} {p90:>8.2f} {delta} {count:>8}  {' '.join(walq_mods)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
