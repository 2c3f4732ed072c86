"""Prometheus metrics: what `walq metrics` and `walq exporter` say matches what was archived.

Real WAL archived by `walq archive` (embedded) and by real Celery workers (fleet), read
back by Prometheus' own text parser; the exporter scraped over HTTP with urllib; an
S3-backed server scraped through the S3 fault proxy, which must count zero requests.
docs/alerts.yml and docs/metrics.md are held to the metrics the code really serves.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.services.fleet import REPO, celery_client, wait_settled
from tests.services.homes import WalqHome
from tests.services.pg import free_port, wait_for
from tests.services.pitr import run_archiving_primary
from tests.services.s3 import Bucket, FaultProxy, s3_settings
from walq.catalog import WalState, open_catalog
from walq.catalog.base import DURATION_BUCKETS

DOCS = REPO / "docs"
HISTOGRAM_PARTS = re.compile(r"_(bucket|sum|count)$")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    """Metric names as documented: a histogram by its base name."""
    found = set()
    for name, _ in samples:
        base = HISTOGRAM_PARTS.sub("", name)
        found.add(base if base == "walq_archive_duration_seconds" else name)
    return found


def documented() -> set[str]:
    return set(re.findall(r"^\| `(walq_[a-z_]+)` \|", (DOCS / "metrics.md").read_text(), re.M))


def scrape(base: str) -> Samples:
    with urllib.request.urlopen(f"{base}/metrics", timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def start_exporter(home: WalqHome, *servers: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = home.start("exporter", "--listen", f"127.0.0.1:{port}", *servers, capture=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"{base}/", timeout=5):
                return True
        except OSError:
            return False

    wait_for(answers, 60, "the exporter to answer", 0.1)
    return proc, base


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)


def catalog_totals(home: WalqHome, server: str = "pg1") -> tuple[int, int, int, float, list[int]]:
    """From the catalog, row by row: WALs, plain bytes, stored bytes, duration sum, buckets."""
    catalog = open_catalog(home.config)
    try:
        rows = catalog.records(server, WalState.ARCHIVED)
    finally:
        catalog.close()
    durations = [(r.prepare_seconds or 0) + (r.store_seconds or 0) for r in rows]
    return (
        len(rows),
        sum(r.size or 0 for r in rows),
        sum(r.stored_size or 0 for r in rows),
        sum(durations),
        [sum(1 for d in durations if d <= b) for b in DURATION_BUCKETS],
    )


# -- embedded -----------------------------------------------------------------------


def test_embedded_metrics_match_the_archive(walq_home: WalqHome, wal_corpus, workdir) -> None:
    segs = wal_corpus.segments
    archived = [*segs[:5], *segs[6:9]]  # segs[5] missing: one gap
    wal_corpus.copy_into(walq_home.incoming(), archived)
    (walq_home.incoming() / segs[12]).write_bytes(os.urandom(1 << 20))  # garbage: failed
    res = walq_home.run("archive")
    assert res.returncode == 1, res.stdout  # the garbage one failed

    out = walq_home.run("metrics", check=True)
    samples = parse(out.stdout)
    label = {"server": "pg1"}
    plain = sum(wal_corpus.path(n).stat().st_size for n in archived)
    stored = sum(walq_home.stored(n).stat().st_size for n in archived)
    assert value(samples, "walq_archived_wals_total", **label) == len(archived)
    assert value(samples, "walq_archived_bytes_total", **label) == plain
    assert value(samples, "walq_archived_stored_bytes_total", **label) == stored < plain
    assert value(samples, "walq_failed_wals", **label) == 1
    assert value(samples, "walq_errors_dir_files", **label) == 1
    assert value(samples, "walq_gaps", **label) == 1
    assert value(samples, "walq_waiting_files", **label) == 0
    assert value(samples, "walq_oldest_waiting_age_seconds", **label) == 0
    assert value(samples, "walq_claimed_wals", **label) == 0
    assert value(samples, "walq_collect_errors", **label) == 0
    wals, _, _, duration_sum, buckets = catalog_totals(walq_home)
    assert value(samples, "walq_archive_duration_seconds_count", **label) == wals
    assert value(samples, "walq_archive_duration_seconds_sum", **label) == pytest.approx(
        duration_sum
    )
    for bound, count in zip(DURATION_BUCKETS, buckets, strict=True):
        le = repr(bound)
        assert value(samples, "walq_archive_duration_seconds_bucket", le=le, **label) == count
    assert value(samples, "walq_archive_duration_seconds_bucket", le="+Inf", **label) == wals
    newest = value(samples, "walq_last_archived_timestamp_seconds", **label)
    assert 0 <= value(samples, "walq_last_archived_age_seconds", **label) < 3600
    assert newest > 1e9
    assert not any(n.startswith("walq_retention") for n in names(samples)), "no policy"
    assert not any(n.startswith(("walq_queue", "walq_live")) for n in names(samples))

    # Files waiting are counted, with the age of the oldest; the gap closes when archived.
    wal_corpus.copy_into(walq_home.incoming(), [segs[5], segs[9]])
    samples = parse(walq_home.run("metrics", "pg1", check=True).stdout)
    assert value(samples, "walq_waiting_files", **label) == 2
    assert value(samples, "walq_oldest_waiting_age_seconds", **label) >= 0
    walq_home.run("archive", "pg1")
    samples = parse(walq_home.run("metrics", check=True).stdout)
    assert value(samples, "walq_gaps", **label) == 0
    assert value(samples, "walq_archived_wals_total", **label) == len(archived) + 2

    # --output: the same text, written atomically with walq's file mode, nothing left over.
    target = workdir / "textfile" / "walq.prom"
    target.parent.mkdir()
    walq_home.run("metrics", "--output", str(target), check=True)
    assert value(parse(target.read_text()), "walq_archived_wals_total", **label) == 10
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["walq.prom"]


def test_a_home_never_archived_has_zeros_and_creates_nothing(walq_home: WalqHome) -> None:
    samples = parse(walq_home.run("metrics", check=True).stdout)
    assert value(samples, "walq_archived_wals_total", server="pg1") == 0
    assert ("walq_last_archived_age_seconds", frozenset({("server", "pg1")})) not in samples
    assert not walq_home.config.catalog_path.exists(), "a scrape never creates the catalog"


def test_metrics_arguments_are_one_line_errors(walq_home: WalqHome, workdir: Path) -> None:
    for args, expected in [
        (("exporter", "--listen", "9187"), "argument --listen: must be HOST:PORT"),
        (("exporter", "--listen", "localhost:http"), "port must be a number from 1 to 65535"),
        (("exporter", "--listen", "127.0.0.1:0"), "port must be a number from 1 to 65535"),
        (("metrics", "nosuch"), "nosuch"),
        (("metrics", "--output", str(workdir / "no" / "x.prom")), "is not a directory"),
    ]:
        res = walq_home.run(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and expected in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_exporter_port_in_use_is_one_line(walq_home: WalqHome) -> None:
    proc, base = start_exporter(walq_home)
    try:
        port = base.rsplit(":", 1)[1]
        res = walq_home.run("exporter", "--listen", f"127.0.0.1:{port}", timeout=60)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"--listen 127.0.0.1:{port}: cannot listen" in res.stderr
        with urllib.request.urlopen(f"{base}/nothing-here", timeout=30) as r:
            raise AssertionError(f"expected 404, got {r.status}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    finally:
        stop(proc)


def test_per_wal_paths_never_import_prometheus_client() -> None:
    """put-wal, get-wal, the archiver, the fleet stages and check stay free of it."""
    code = (
        "import sys\n"
        "import walq.main, walq.cli, walq.archive.putwal, walq.archive.embedded\n"
        "import walq.restore.getwal, walq.fleet.stages, walq.report.checks, walq.metrics.commands\n"
        "walq.cli.build_parser()\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr


# -- S3: a scrape costs no request -----------------------------------------------------


def test_a_scrape_of_an_s3_server_sends_s3_nothing(
    make_home, s3_bucket: Bucket, wal_corpus
) -> None:
    with FaultProxy(s3_bucket.server.ports["s3"], every=0) as proxy:
        home = make_home({"pg1": s3_settings(s3_bucket, endpoint=proxy.endpoint)})
        names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
        home.run("archive", check=True)
        assert proxy.count > 0, "the archive went through the proxy"
        before = proxy.count

        samples = parse(home.run("metrics", check=True).stdout)
        assert value(samples, "walq_archived_wals_total", server="pg1") == len(names)
        exporter, base = start_exporter(home)
        try:
            for _ in range(3):
                scraped = scrape(base)
                assert value(scraped, "walq_archived_wals_total", server="pg1") == len(names)
        finally:
            stop(exporter)
        stored = sum(s3_bucket.head(k)["ContentLength"] for k in s3_bucket.object_keys("fleet"))
        assert proxy.count == before, f"a scrape sent {proxy.count - before} S3 request(s)"
    assert value(samples, "walq_archived_stored_bytes_total", server="pg1") == stored


# -- fleet ----------------------------------------------------------------------------


def test_exporter_serves_every_metric_from_a_real_fleet(
    fleet_home, cluster_factory, workdir: Path, fleet_factory, walq_runnable_by_postgres
) -> None:
    home: WalqHome = fleet_home({"pg1": {"retention_policy": "REDUNDANCY 1"}})
    assert home.run("catalog", "init").returncode == 0
    home.give_to_postgres()
    fleet = fleet_factory(home.config_path)
    fleet.worker("cpu", queues="walq.cpu")
    fleet.worker("io", pool="threads", concurrency=2, queues="walq.scan,walq.io")
    fleet.beat()
    exporter, base = start_exporter(home)
    try:
        run_archiving_primary(cluster_factory, home, workdir / "base", transactions=300)
        catalog = open_catalog(home.config)
        try:
            wait_settled(home, catalog, fleet)
            archived = catalog.archived_names("pg1")
        finally:
            catalog.close()
        wals, plain, stored, duration_sum, _ = catalog_totals(home)
        assert wals == len(archived) >= 3
        # A task for a made-up server (say, from Flower) is refused and counted under
        # "(unknown)": an outside caller cannot create new label values.
        celery_client(home.config_path).send_task("walq.retry_wal", args=["made-up", archived[0]])
        refused = {"server": "(unknown)", "stage": "retry_wal", "outcome": "refused"}
        key = ("walq_task_outcomes_total", frozenset(refused.items()))
        wait_for(lambda: key in scrape(base), 60, "the refusal to be counted", 0.25)
        samples = scrape(base)
    finally:
        stop(exporter)

    assert names(samples) == documented(), "the fleet serves every documented metric"
    label = {"server": "pg1"}
    assert value(samples, "walq_archived_wals_total", **label) == wals
    assert value(samples, "walq_archived_bytes_total", **label) == plain
    assert value(samples, "walq_archived_stored_bytes_total", **label) == stored
    assert value(samples, "walq_archive_duration_seconds_count", **label) == wals
    assert value(samples, "walq_archive_duration_seconds_sum", **label) == pytest.approx(
        duration_sum
    )
    assert value(samples, "walq_gaps", **label) == 0
    assert value(samples, "walq_failed_wals", **label) == 0
    assert value(samples, "walq_retention_base_backups", **label) == 1
    assert value(samples, "walq_retention_window_seconds", **label) >= 0
    group_commits = value(
        samples, "walq_task_outcomes_total", stage="commit_server", outcome="ok", **label
    )
    assert 1 <= group_commits <= wals  # one group commit carries one or more WALs
    assert value(samples, "walq_task_outcomes_total", stage="store", outcome="ok", **label) >= wals
    assert value(samples, "walq_task_outcomes_total", stage="scan_server", outcome="ok", **label)
    for queue in ("walq.scan", "walq.cpu", "walq.io"):
        assert value(samples, "walq_live_workers", queue=queue) == 1
        assert value(samples, "walq_queue_messages", queue=queue) >= 0
    assert value(samples, "walq_redis_up", role="broker") == 1
    assert value(samples, "walq_redis_up", role="lock") == 1
    assert 0 <= value(samples, "walq_beat_last_tick_age_seconds") <= 30
    assert value(samples, "walq_task_outcomes_total", **refused) == 1
    assert not any(("server", "made-up") in labels for _, labels in samples)


# -- docs -----------------------------------------------------------------------------


def test_alert_rules_use_only_documented_metrics() -> None:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"WalqArchiveStalled", "WalqQueueGrowing", "WalqGap", "WalqFailedWal"} <= set(alerts)
    known = documented()
    assert len(known) >= 20
    for alert, expr in alerts.items():
        used = set(re.findall(r"\bwalq_[a-z_]+", expr))
        assert used, alert
        assert used <= known, f"{alert} uses undocumented {used - known}"
