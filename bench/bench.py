"""walq's benchmark: walq against Barman and pgBackRest, side by side, in one run,
on the same real WAL. Run it through ``bash bench/run.sh`` (it prepares the
bench-only virtualenv, pgBackRest and walq's own venv first).

Each comparison runs its tools alternately (A, B, A, B, ...) for ``--rounds``
rounds, each on a fresh copy of the cached corpus. The table shows, per tool
and codec: segments/s (median, min–max), MB/s of raw WAL, CPU seconds per
segment (the whole process tree, daemons included), peak RSS of the largest
process, and on every non-walq row the ratio walq ÷ that tool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO):  # before bench/ itself, where bench.py would shadow the package
    sys.path.insert(0, str(REPO))

from bench import corpus as corpus_mod  # noqa: E402
from bench import runners  # noqa: E402
from bench.runners import Ctx, Run  # noqa: E402

RESULTS = REPO / "bench" / "results"
MiB = 1 << 20

# (codec, level): the same numeric level for every tool in a comparison.
# lz4 level 1 is LZ4's fast mode in every tool (liblz4 frame levels 0-2 are the same).
LOCAL_CODECS = [("zstd", 3), ("zstd", 1), ("lz4", 1), ("gzip", 6), ("none", None)]
PGBR_CODECS = [("zstd", 3), ("lz4", 1)]
S3_CODECS = [("zstd", 3), ("lz4", 1)]
FLEET_CODECS = [("zstd", 3), ("lz4", 1)]
LIMIT_CODECS = [("zstd", 3), ("zstd", 1), ("lz4", 1), ("gzip", 6)]
ROW_NAMES = ("local", "pgbackrest", "fleet", "s3", "restore", "codec", "putwal")

# (scenario, tool): the rows the comparisons name, each with one codec.
WALQ_ARCHIVE = ("local", "walq archive")
BARMAN_ARCHIVE = ("local", "barman archive-wal")
PGBR_POSIX = ("local", "pgbackrest async posix")
CODEC_ALONE = ("limit", "codec alone")
WALQ_FLEET = ("fleet", "walq fleet")
WALQ_S3 = ("s3", "walq archive s3")
PGBR_S3 = ("s3", "pgbackrest async s3")
BARMAN_CLOUD_ARCHIVE = ("s3", "barman-cloud-wal-archive")
WALQ_GET_WAL = ("restore", "walq get-wal --prefetch 8")
BARMAN_CLOUD_RESTORE = ("restore", "barman-cloud-wal-restore")


def codec_label(codec: str, level: int | None) -> str:
    return codec if level is None else f"{codec}-{level}"


def selected(
    pairs: list[tuple[str, int | None]], wanted: list[str] | None
) -> Iterator[tuple[str, int | None, str]]:
    """(codec, level, label) for each pair that ``--codecs`` keeps (all without it)."""
    for codec, level in pairs:
        label = codec_label(codec, level)
        if wanted is None or label in wanted:
            yield codec, level, label


@dataclass
class Series:
    """All rounds of one tool in one scenario."""

    scenario: str
    tool: str
    codec: str
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.scenario}|{self.tool}|{self.codec}"

    def rates(self) -> list[float]:
        return [r.seg_per_s for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates()) if self.runs else 0.0

    def summary(self) -> dict[str, object]:
        if not self.runs:
            return {
                "scenario": self.scenario,
                "tool": self.tool,
                "codec": self.codec,
                "error": self.error or "not run",
            }
        rates = self.rates()
        seg = self.runs[0].segments
        cpu = [r.sample.cpu / r.segments for r in self.runs if r.sample.cpu is not None]
        rss = max(r.sample.peak_rss for r in self.runs)
        by = max(self.runs, key=lambda r: r.sample.peak_rss).sample.peak_rss_by
        raw = self.runs[0].raw_bytes
        store = [
            float(r.extra["store_cpu_s"]) / r.segments
            for r in self.runs
            if r.extra.get("store_cpu_s") is not None
        ]
        return {
            "scenario": self.scenario,
            "tool": self.tool,
            "codec": self.codec,
            "segments": seg,
            "store_cpu_s_per_seg": statistics.median(store) if store else None,
            "rounds": len(self.runs),
            "seg_per_s": statistics.median(rates),
            "seg_per_s_min": min(rates),
            "seg_per_s_max": max(rates),
            "mb_per_s": statistics.median(rates) * raw / seg / 1e6,
            "cpu_s_per_seg": statistics.median(cpu) if cpu else None,
            "cpu_source": self.runs[0].sample.cpu_source,
            "peak_rss_mib": rss / MiB,
            "peak_rss_process": by,
            "ratio": (raw * len(self.runs)) / max(1, sum(r.stored_bytes for r in self.runs))
            if self.runs[0].stored_bytes
            else None,
            "processes": {k: v / MiB for k, v in sorted(self.runs[-1].sample.procs.items())},
            "runs": [r.to_json() for r in self.runs],
            "error": self.error,
        }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.series: dict[str, Series] = {}
        self.comparisons: list[dict[str, object]] = []
        self.notes: list[str] = []
        self.extra: dict[str, object] = {}
        self.started = time.time()

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.started:7.1f}s] {msg}", flush=True)

    def series_for(self, scenario: str, tool: str, codec: str) -> Series:
        s = Series(scenario, tool, codec)
        return self.series.setdefault(s.key, s)

    def measure(self, scenario: str, tools: list[tuple[str, object]], codec: str) -> None:
        """Run ``tools`` alternately, ``rounds`` times; a tool that fails is recorded, not fatal."""
        for r in range(self.args.rounds):
            for tool, fn in tools:
                s = self.series_for(scenario, tool, codec)
                if s.error:
                    continue
                try:
                    run = fn()  # type: ignore[operator]
                except Exception as exc:  # the row says what went wrong
                    s.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                    self.log(f"  {scenario:10s} {tool:28s} {codec:7s} FAILED: {s.error}")
                    if self.args.verbose:
                        traceback.print_exc()
                    continue
                s.runs.append(run)
                cpu = f"{run.sample.cpu / run.segments:.3f}" if run.sample.cpu is not None else "?"
                self.log(
                    f"  {scenario:10s} {tool:28s} {codec:7s} round {r + 1}: {run.seg_per_s:7.1f} seg/s, "
                    f"cpu {cpu} s/seg, rss {run.sample.peak_rss / MiB:.0f} MiB"
                )

    def measure_alone(self, row: tuple[str, str], fn: object, codec: str) -> None:
        """``measure`` for a (scenario, tool) row with nothing to alternate with."""
        scenario, tool = row
        self.measure(scenario, [(tool, fn)], codec)

    def compare(
        self,
        what: str,
        codec: str,
        walq: tuple[str, str],
        other: tuple[str, str],
        target: float | None,
        text: str,
    ) -> None:
        """Claim that walq's (scenario, tool) row reaches ``target`` × the other's, for ``codec``."""
        self.comparisons.append(
            {
                "what": what,
                "walq": "|".join((*walq, codec)),
                "other": "|".join((*other, codec)),
                "target": target,
                "label": f"{text}, {codec}",
            }
        )


def machine_info() -> dict[str, object]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    fs = out(["df", "-hT", str(REPO)]).splitlines()[-1:]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "os": out(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "filesystem": fs[0] if fs else "?",
        "python": platform.python_version(),
        "postgresql": out(["psql", "--version"]),
        "pgbackrest": out(["pgbackrest", "version"]),
        "barman": out([str(REPO / ".venv-bench" / "bin" / "barman"), "--version"]).splitlines()[
            0:1
        ],
        "weed": out([str(runners.VENV / "weed"), "version"]),
        "walq_commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "libs": out(
            [
                str(runners.PYTHON),
                "-c",
                "import zstandard, lz4, zlib; print('zstandard', zstandard.__version__, 'lz4', lz4.version.version, 'zlib', zlib.ZLIB_RUNTIME_VERSION)",
            ]
        ),
    }


def run_all(b: Bench, ctx: Ctx, only: set[str]) -> None:
    a = b.args
    if "local" in only or "pgbackrest" in only or "codec" in only:
        for codec, level, label in selected(LOCAL_CODECS, a.codecs):
            tools: list[tuple[str, object]] = [
                ("walq archive", lambda c=codec, lv=level: runners.walq_archive(ctx, c, lv))
            ]
            if "local" in only and not a.walq_only:
                tools.append(
                    (
                        "barman archive-wal",
                        lambda c=codec, lv=level: runners.barman_archive(ctx, c, lv),
                    )
                )
            if "pgbackrest" in only and (codec, level) in PGBR_CODECS and not a.walq_only:
                tools.append(
                    (
                        "pgbackrest async posix",
                        lambda c=codec, lv=level: runners.pgbackrest_push(ctx, c, lv),
                    )
                )
            b.log(f"local archive, {label}: {', '.join(t for t, _ in tools)}")
            b.measure("local", tools, label)
            # issue 16: 1.8x Barman for zstd, 0.5x Barman's bare rename for none
            target = {"zstd": 1.8, "none": 0.5}.get(codec)
            text = "walq archive vs barman archive-wal"
            b.compare("local", label, WALQ_ARCHIVE, BARMAN_ARCHIVE, target, text)
            if (codec, level) in PGBR_CODECS:
                text = "walq archive vs pgbackrest archive-push async (process-max=2), posix repo"
                b.compare("pgbackrest", label, WALQ_ARCHIVE, PGBR_POSIX, 1.3, text)
    if "codec" in only:
        for codec, level, label in selected(LIMIT_CODECS, a.codecs):
            b.log(f"codec alone in-process on {os.cpu_count()} cores, {label}")
            b.measure_alone(
                CODEC_ALONE,
                lambda c=codec, lv=level: runners.codec_limit(ctx, c, lv, os.cpu_count() or 1),
                label,
            )
            text = f"walq archive vs the codec alone on {os.cpu_count()} cores"
            b.compare("codec", label, WALQ_ARCHIVE, CODEC_ALONE, 0.7, text)
    if "fleet" in only:
        for codec, level, label in selected(FLEET_CODECS, a.codecs):
            b.log(f"fleet, {label}")
            b.measure_alone(
                WALQ_FLEET, lambda c=codec, lv=level: runners.walq_fleet(ctx, c, lv), label
            )
            text = "walq fleet (Celery, this machine) vs barman archive-wal"
            b.compare("fleet", label, WALQ_FLEET, BARMAN_ARCHIVE, 1.2, text)  # issue 15
    if "s3" in only:
        for codec, level, label in selected(S3_CODECS, a.codecs):
            tools = [
                (
                    "walq archive s3",
                    lambda c=codec, lv=level: runners.walq_archive(ctx, c, lv, s3=True),
                )
            ]
            if not a.walq_only:
                tools += [
                    (
                        "pgbackrest async s3",
                        lambda c=codec, lv=level: runners.pgbackrest_push(ctx, c, lv, s3=True),
                    ),
                    (
                        "barman-cloud-wal-archive",
                        lambda c=codec, lv=level: runners.barman_cloud_archive(ctx, c, lv),
                    ),
                ]
            b.log(f"S3, {label}: {', '.join(t for t, _ in tools)}")
            b.measure("s3", tools, label)
            text = "walq to S3 vs pgbackrest archive-push async to S3"
            b.compare("s3", label, WALQ_S3, PGBR_S3, 2.0, text)
            text = "walq to S3 vs barman-cloud-wal-archive once per WAL"
            b.compare("s3", label, WALQ_S3, BARMAN_CLOUD_ARCHIVE, 20.0, text)
    if "restore" in only:
        codec, level = "zstd", 3
        label = codec_label(codec, level)
        b.log(f"restore from S3 ({label}), once per WAL in order")
        try:
            source = runners.prepare_restore_source(ctx, codec, level)
        except Exception as exc:
            b.series_for(
                "restore", "walq get-wal --prefetch 8", label
            ).error = f"source archive failed: {exc}"
            source = None
        if source is not None:
            tools = [("walq get-wal --prefetch 8", lambda: runners.walq_get_wal(ctx, source, 8))]
            if not a.walq_only:
                tools.append(
                    ("barman-cloud-wal-restore", lambda: runners.barman_cloud_restore(ctx, source))
                )
            b.measure("restore", tools, label)
            shutil.rmtree(str(source.extra["dir"]), ignore_errors=True)
            ctx.s3.drop_bucket(str(source.extra["bucket"]))  # type: ignore[union-attr]
        text = "walq get-wal --prefetch 8 vs barman-cloud-wal-restore, once per WAL"
        b.compare("restore", label, WALQ_GET_WAL, BARMAN_CLOUD_RESTORE, 5.0, text)
        b.extra["python_startup_s"] = runners.python_startup(ctx)
    if "putwal" in only:
        b.log("put-wal: CPU per call beside python -c pass and cp + sync")
        b.extra["put_wal"] = putwal_row(ctx, with_pgbackrest=not a.walq_only)


def putwal_row(ctx: Ctx, *, with_pgbackrest: bool) -> dict[str, object]:
    """bench.putwal_cost on the per-WAL corpus, with pgBackRest's async archive-push
    (the call, and per call with its async process) unless walq only."""
    from bench import putwal_cost

    corpus = ctx.per_wal()
    return putwal_cost.measure(
        corpus.directory,
        corpus.segments,
        ctx.fresh("putwal"),
        corpus.pgdata if with_pgbackrest else None,
    )


# -- output -----------------------------------------------------------------------------------


def evaluate(b: Bench) -> list[dict[str, object]]:
    out = []
    for c in b.comparisons:
        w, o = b.series.get(str(c["walq"])), b.series.get(str(c["other"]))
        ratio = None
        if w and o and w.runs and o.runs:
            ratio = w.median / o.median
        target = c["target"]
        holds = None if ratio is None or target is None else ratio >= target  # type: ignore[operator]
        out.append(
            {
                **c,
                "ratio": ratio,
                "holds": holds,
                "missing": None
                if ratio is not None
                else (
                    (w.error if w and w.error else None)
                    or (o.error if o and o.error else None)
                    or "not run"
                ),
            }
        )
    return out


def ratio_for(b: Bench, key: str, results: list[dict[str, object]]) -> str:
    """walq ÷ this row, for each walq row compared with it (named when there are several)."""
    parts = [
        (str(r["walq"]).split("|")[1].removeprefix("walq "), r["ratio"])
        for r in results
        if r["other"] == key and r["ratio"] is not None
    ]
    parts = list(dict.fromkeys(parts))
    if len(parts) == 1:
        return f"{parts[0][1]:.2f}×"
    return ", ".join(f"{name} {ratio:.2f}×" for name, ratio in parts)


def table(b: Bench, results: list[dict[str, object]], markdown: bool) -> str:
    head = [
        "row",
        "tool",
        "codec",
        "seg/s median (min–max)",
        "MB/s",
        "CPU s/seg",
        "peak RSS MiB",
        "walq ÷ this",
    ]
    rows = []
    order = {"local": 0, "limit": 1, "fleet": 2, "s3": 3, "restore": 4}
    for s in sorted(
        b.series.values(),
        key=lambda s: (order.get(s.scenario, 9), s.codec, not s.tool.startswith("walq"), s.tool),
    ):
        d = s.summary()
        if d.get("error") and not s.runs:
            rows.append(
                [s.scenario, s.tool, s.codec, f"not available: {d['error']}", "", "", "", ""]
            )
            continue
        cpu = f"{d['cpu_s_per_seg']:.3f}" if d["cpu_s_per_seg"] is not None else "?"
        if d.get("store_cpu_s_per_seg") is not None:
            cpu += f" (+{d['store_cpu_s_per_seg']:.3f} S3)"
        rows.append(
            [
                s.scenario,
                s.tool,
                s.codec,
                f"{d['seg_per_s']:.1f} ({d['seg_per_s_min']:.1f}–{d['seg_per_s_max']:.1f})",
                f"{d['mb_per_s']:.0f}",
                cpu,
                f"{d['peak_rss_mib']:.0f}",
                ratio_for(b, s.key, results),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def targets_text(results: list[dict[str, object]], markdown: bool) -> str:
    lines = []
    for r in results:
        if r["target"] is None:
            verdict = "(no target)"
        elif r["holds"] is None:
            verdict = f"NOT MEASURED: {r['missing']}"
        else:
            verdict = "holds" if r["holds"] else "MISSED"
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        target = f"≥ {r['target']}×" if r["target"] is not None else ""
        lines.append(
            f"{'- ' if markdown else '  '}{r['label']}: {ratio} {target} {verdict}".rstrip()
        )
    return "\n".join(lines)


def sustained_text(results: dict, markdown: bool) -> str:
    lines = []
    for label, r in results.items():
        p = "- " if markdown else "  "
        if "error" in r:
            lines.append(f"{p}{label}: not available: {r['error']}")
            continue
        verdict = (
            "holds"
            if r["lag_p99_s"] is not None and r["lag_p99_s"] < 2 and r["not_archived"] == 0
            else "MISSED"
        )
        lines.append(
            f"{p}{label}: {r['fed_segments']} segments at {r['achieved_rate']}/s for {r['fed_seconds']} s (+ pgbench's own "
            f"{r['live_pgbench_segments']}): archive lag p50 {r['lag_p50_s']} s, p99 {r['lag_p99_s']} s, max {r['lag_max_s']} s; "
            f"at most {r['max_waiting_in_incoming']} files waiting in incoming; {r['cpu_s_per_segment']} CPU s/segment; "
            f"peak RSS per worker process {max(r['peak_rss_mib_by_process'].values(), default=0)} MiB — {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="16 segments, 1 round: a smoke test in a few minutes"
    )
    ap.add_argument(
        "--rounds", type=int, default=None, help="rounds per tool (default 3; 1 with --quick)"
    )
    ap.add_argument(
        "--segments", type=int, default=None, help="corpus size (default 128; 16 with --quick)"
    )
    ap.add_argument(
        "--only", nargs="+", choices=ROW_NAMES + ("sustained",), help="run only these rows"
    )
    ap.add_argument("--codecs", nargs="+", help="only these codec-level labels, e.g. zstd-3 lz4-1")
    ap.add_argument(
        "--walq-only", action="store_true", help="skip Barman and pgBackRest (no downloads)"
    )
    ap.add_argument("--sustained", action="store_true", help="also run the sustained-load mode")
    ap.add_argument("--sustained-seconds", type=float, default=None)
    ap.add_argument(
        "--per-wal-limit",
        type=int,
        default=0,
        help="segments for tools that start one process per WAL (0: the whole corpus)",
    )
    ap.add_argument(
        "--publish", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="results directory (default bench/results/<time>)"
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.segments = args.segments or (16 if args.quick else 128)
    only = set(args.only or ROW_NAMES)
    if args.sustained:
        only.add("sustained")
    b = Bench(args)
    out = args.out or RESULTS / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)

    corpus = corpus_mod.make(args.segments, log=b.log)
    b.log(
        f"corpus: {len(corpus.segments)} segments of {corpus.seg_size // MiB} MiB in {corpus.directory}"
    )
    scratch = corpus_mod.CACHE / f"work-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o755)
    ctx = Ctx(
        corpus, scratch, REPO / ".venv-bench" / "bin", per_wal_limit=args.per_wal_limit, log=b.log
    )
    try:
        if only & {"s3", "restore"}:
            from bench.services import BenchS3

            s3 = ctx.s3 = BenchS3(scratch / "s3").start()
            b.log(f"SeaweedFS S3 on {s3.endpoint} (https on port {s3.https_port})")
        if only & {"fleet", "sustained"}:
            from bench.services import CatalogDB
            from tests.services.fleet import ADMIN_URL, RedisServer

            ctx.redis = RedisServer(scratch / "redis").start()
            ctx.catalog_db = CatalogDB(ADMIN_URL).__enter__()
        run_all(b, ctx, only)
        if "sustained" in only:
            from bench import sustained

            results: dict[str, object] = {}
            for codec, level in [("zstd", 3), ("lz4", 1)]:
                label = codec_label(codec, level)
                b.log(
                    f"sustained load, {label}: pgbench + incoming WAL at 10 segments/s, archived by the fleet"
                )
                try:
                    results[label] = sustained.run(
                        ctx,
                        seconds=args.sustained_seconds,
                        quick=args.quick,
                        codec=codec,
                        level=level,
                    )
                except Exception as exc:
                    results[label] = {"error": f"{type(exc).__name__}: {exc}"}
                    if args.verbose:
                        traceback.print_exc()
                b.log(f"sustained {label}: {results[label]}")
            b.extra["sustained"] = results
        corpus.check_intact()
    finally:
        ctx.close()

    results = evaluate(b)
    info = machine_info()
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b.started)),
        "command": "bash bench/run.sh " + " ".join(sys.argv[1:]),
        "machine": info,
        "corpus": {
            "segments": len(corpus.segments),
            "seg_size": corpus.seg_size,
            "system_identifier": corpus.system_identifier,
        },
        "rounds": args.rounds,
        "per_wal_limit": args.per_wal_limit,
        "series": [s.summary() for s in b.series.values()],
        "comparisons": results,
        "extra": b.extra,
        "duration_s": round(time.time() - b.started, 1),
    }
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    text = table(b, results, markdown=False)
    md = table(b, results, markdown=True)
    (out / "table.txt").write_text(text + "\n")
    print()
    print(text)
    print()
    print("targets:")
    print(targets_text(results, markdown=False))
    if "sustained" in b.extra:
        print("sustained load (target: 10 segments/s with archive lag p99 under 2 s):")
        print(sustained_text(b.extra["sustained"], markdown=False))
    chart = out / "benchmarks.png"
    chart_python = REPO / ".venv-bench" / "bin" / "python"  # matplotlib lives only there
    if not chart_python.exists():
        b.log("chart not drawn: no .venv-bench (bench/run.sh creates it)")
    else:
        draw = subprocess.run(
            [
                str(chart_python),
                str(REPO / "bench" / "chart.py"),
                str(out / "results.json"),
                str(chart),
            ],
            capture_output=True,
            text=True,
        )
        if draw.returncode != 0:
            b.log(f"chart not drawn: {draw.stderr.strip()[-500:]}")
    if args.publish:
        from bench import publish

        publish.write_docs(
            data, md, targets_text(results, markdown=True), chart if chart.exists() else None
        )
        b.log("docs/benchmarks.md and docs/benchmarks.png updated")
    b.log(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
