"""Barman's WAL hook scripts, with real parts: real shell scripts written to a scratch
directory record every run (its environment, whether BARMAN_FILE exists, the order)
and exit with the codes a test asks for; real ``walq archive`` runs on real WAL
segments, a real Celery worker (fleet mode, PostgreSQL catalog), real ``walq
delete``/``walq expire``, and a real S3 server for the s3:// BARMAN_FILE.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services.homes import WalqHome
from tests.services.pg import wait_for
from walq.catalog import WalState, open_catalog
from walq.config import HOOK_SCRIPTS, load_config
from walq.errors import ConfigError

ARCHIVE_HOOKS = [key for key in HOOK_SCRIPTS if "archive" in key]
DELETE_HOOKS = [key for key in HOOK_SCRIPTS if "wal_delete" in key]
ORDER = ["pre_archive_script", "pre_archive_retry_script"]
POST_ORDER = ["post_archive_retry_script", "post_archive_script"]
FAST_HOOKS = {"hook_retry_sleep": 0.05, "hook_timeout": 30}
# what walq's own process holds and no hook may see
SECRETS = {
    "WALQ_TEST_SECRET": "walq-secret-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "PGPASSWORD": "pg-secret-value",
}

HOOK_SCRIPT = r"""#!/bin/sh
# A recording hook: $1 names the key it is configured as. Each run writes its
# environment (and whether BARMAN_FILE exists) to runs/KEY.SEGMENT.N, appends
# "KEY SEGMENT" to order, and exits with the N-th code of codes/KEY.SEGMENT
# (the last one repeats; default 0). The code "sleep" starts a 60 s sleep and waits.
dir='@DIR@'
tag=$1
n=$(( $(ls "$dir/runs" | grep -c "^$tag\.$BARMAN_SEGMENT\.") + 1 ))
if [ -e "$BARMAN_FILE" ]; then exists=1; else exists=0; fi
{ env; echo "FILE_EXISTS=$exists"; } > "$dir/runs/.tmp.$$"
mv "$dir/runs/.tmp.$$" "$dir/runs/$tag.$BARMAN_SEGMENT.$n"
echo "$tag $BARMAN_SEGMENT" >> "$dir/order"
codes=0
if [ -f "$dir/codes/$tag.$BARMAN_SEGMENT" ]; then codes=$(cat "$dir/codes/$tag.$BARMAN_SEGMENT"); fi
i=1; code=0
for c in $codes; do code=$c; [ $i -ge $n ] && break; i=$((i+1)); done
echo "output of $tag run $n"
if [ "$code" = sleep ]; then sleep 60 & echo $! > "$dir/sleep.pid"; wait; exit 0; fi
exit $code
"""


@dataclass
class Recorder:
    """The recording hook script and what its runs left behind."""

    root: Path

    @property
    def script(self) -> Path:
        return self.root / "hook.sh"

    def command(self, key: str) -> str:
        return f"{self.script} {key}"

    def commands(self, keys: list[str]) -> dict[str, str]:
        return {key: self.command(key) for key in keys}

    def codes(self, key: str, segment: str, *codes: object) -> None:
        (self.root / "codes" / f"{key}.{segment}").write_text(" ".join(map(str, codes)))

    def runs(self, key: str, segment: str) -> list[dict[str, str]]:
        found = []
        n = 1
        while (path := self.root / "runs" / f"{key}.{segment}.{n}").exists():
            found.append(
                dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
            )
            n += 1
        return found

    def order(self, segment: str) -> list[str]:
        try:
            lines = (self.root / "order").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.split()[0] for line in lines if line.split()[1] == segment]


@pytest.fixture
def recorder(workdir: Path) -> Recorder:
    root = workdir / "hooks"
    (root / "runs").mkdir(parents=True)
    (root / "codes").mkdir()
    rec = Recorder(root)
    rec.script.write_text(HOOK_SCRIPT.replace("@DIR@", str(root)))
    rec.script.chmod(0o755)
    return rec


def run_walq(home: WalqHome, *args: str, aws: bool = False) -> subprocess.CompletedProcess[str]:
    """The walq CLI with secrets in its own environment (none may reach a hook); with
    ``aws`` the real S3 credentials (AWS_*) stay as the s3_bucket fixture set them."""
    env = {**os.environ, **SECRETS}
    if aws:
        env.pop("AWS_SECRET_ACCESS_KEY")
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    return subprocess.run(home.command(*args), capture_output=True, text=True, timeout=300, env=env)


def assert_no_secret(env: dict[str, str]) -> None:
    leaked = [k for k in env if k.startswith(("WALQ", "AWS_", "PG"))]
    assert not leaked, f"walq's own environment reached a hook: {leaked}"
    assert not any(v in SECRETS.values() for v in env.values())


def archived(home: WalqHome) -> list[str]:
    catalog = open_catalog(home.config)
    try:
        return catalog.archived_names("pg1")
    finally:
        catalog.close()


# --- configuration -------------------------------------------------------------------------------


def test_hook_keys_per_server_with_a_top_level_default(make_home) -> None:
    home = make_home(
        {"pg1": {}, "pg2": {"pre_archive_script": "/bin/true two", "hook_timeout": 5}},
        pre_archive_script="/bin/true one",
        post_wal_delete_script="logger 'wal gone'",
        hook_max_attempts=4,
    )
    servers = home.config.servers
    assert servers["pg1"].pre_archive_script == "/bin/true one"
    assert servers["pg2"].pre_archive_script == "/bin/true two"
    assert servers["pg2"].post_wal_delete_script == "logger 'wal gone'"
    assert servers["pg1"].hook_timeout == 300 and servers["pg2"].hook_timeout == 5
    assert servers["pg1"].hook_max_attempts == servers["pg2"].hook_max_attempts == 4
    assert servers["pg1"].hook_retry_sleep == 3  # Barman's pause between attempts
    assert servers["pg1"].post_archive_script is None


@pytest.mark.parametrize(
    ("where", "key", "value", "says"),
    [
        ("server", "pre_archive_retry_script", "", "not empty"),
        ("server", "post_archive_script", "echo 'unbalanced", "No closing quotation"),
        ("top", "pre_wal_delete_script", "echo a\necho b", "one line"),
        ("top", "hook_timeout", 0, "greater than 0"),
        ("server", "hook_max_attempts", 0, "greater than or equal to 1"),
        ("server", "pre_archive_scrpt", "/bin/true", "unknown key"),
    ],
)
def test_a_bad_hook_setting_is_one_line_naming_the_key(
    make_home, where: str, key: str, value: object, says: str
) -> None:
    servers = {"pg1": {key: value}} if where == "server" else {"pg1": {}}
    home = make_home(servers, **({key: value} if where == "top" else {}))
    with pytest.raises(ConfigError) as err:
        load_config(home.config_path)
    named = f"servers.pg1.{key}" if where == "server" else key
    assert f"{named}:" in str(err.value) and says in str(err.value)
    res = home.run("archive")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and named in res.stderr
    assert "Traceback" not in res.stderr


def test_hook_timeout_must_be_below_claim_timeout_when_hooks_are_set(make_home) -> None:
    """A hook that may outlive its WAL's claim is refused; without hooks nothing changes."""
    assert make_home({"pg1": {}}, claim_timeout=100).config.servers["pg1"].hook_timeout == 300
    home = make_home({"pg1": {"post_archive_script": "true"}}, claim_timeout=100)
    res = home.run("archive")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "hook_timeout (300) must be below claim_timeout (100)" in res.stderr
    home = make_home(
        {"pg1": {"post_archive_script": "true", "hook_timeout": 150}}, claim_timeout=100
    )
    res = home.run("archive")
    assert res.returncode == 2 and "servers.pg1.hook_timeout (150)" in res.stderr


# --- embedded archive ----------------------------------------------------------------------------


def test_embedded_hooks_see_barmans_environment_in_barmans_order(
    make_home, wal_corpus, recorder: Recorder
) -> None:
    home = make_home(
        {"pg1": {"compression": "zstd", **recorder.commands(ARCHIVE_HOOKS)}},
        archive_workers=2,
        **FAST_HOOKS,
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == names
    for name in names:
        assert recorder.order(name) == ORDER + POST_ORDER
        stored = home.stored(name)
        for key in ARCHIVE_HOOKS:
            (env,) = recorder.runs(key, name)
            phase = key.split("_", 1)[0]
            assert_no_secret(env)
            assert env["BARMAN_SERVER"] == "pg1"
            assert env["BARMAN_CONFIGURATION"] == str(home.config_path)
            assert env["BARMAN_HOOK"] == key.removeprefix(f"{phase}_")
            assert env["BARMAN_PHASE"] == phase
            assert env["BARMAN_RETRY"] == ("1" if "retry" in key else "0")
            assert env["BARMAN_SEGMENT"] == name
            assert env["BARMAN_ERROR"] == ""
            assert env["BARMAN_VERSION"]
            assert float(env["BARMAN_TIMESTAMP"]) == pytest.approx(
                wal_corpus.path(name).stat().st_mtime, abs=1
            )
            if phase == "pre":  # the file waiting in incoming/, before anything is archived
                assert env["BARMAN_FILE"] == str(home.incoming() / name)
                assert env["FILE_EXISTS"] == "1"
                assert env["BARMAN_SIZE"] == str(wal_corpus.seg_size)
                assert env["BARMAN_COMPRESSION"] == ""
            else:  # the archived copy, once the source is gone
                assert env["BARMAN_FILE"] == str(stored)
                assert env["FILE_EXISTS"] == "1"
                assert env["BARMAN_SIZE"] == str(stored.stat().st_size)
                assert env["BARMAN_COMPRESSION"] == "zstd"
        assert not (home.incoming() / name).exists()
    # one log line per hook run, with its output
    lines = [line for line in res.stderr.splitlines() if line.startswith("walq: hook pg1 ")]
    assert len(lines) == 4 * len(names), res.stderr
    assert all(" exit 0 " in line and "output: 'output of " in line for line in lines)


def test_embedded_retry_hook_exit_codes(make_home, wal_corpus, recorder: Recorder) -> None:
    """0 and 62 go on; anything else is retried (hook_retry_sleep) until 0 or 62; a post
    retry hook's 63 is ignored. Each WAL gets its own codes."""
    home = make_home({"pg1": recorder.commands(ARCHIVE_HOOKS)}, archive_workers=1, **FAST_HOOKS)
    a, b, c = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    recorder.codes("pre_archive_retry_script", a, 0)
    recorder.codes("pre_archive_retry_script", b, 62)
    recorder.codes("pre_archive_retry_script", c, 1, 2, 0)
    recorder.codes("post_archive_retry_script", a, 63)
    recorder.codes("post_archive_retry_script", b, 1, 0)
    recorder.codes("post_archive_retry_script", c, 62)
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == [a, b, c]
    runs = {
        (key, name): len(recorder.runs(key, name))
        for key in ("pre_archive_retry_script", "post_archive_retry_script")
        for name in (a, b, c)
    }
    assert runs[("pre_archive_retry_script", a)] == 1
    assert runs[("pre_archive_retry_script", b)] == 1
    assert runs[("pre_archive_retry_script", c)] == 3
    assert runs[("post_archive_retry_script", a)] == 1
    assert runs[("post_archive_retry_script", b)] == 2
    assert runs[("post_archive_retry_script", c)] == 1
    assert recorder.order(c) == ["pre_archive_script"] + ["pre_archive_retry_script"] * 3 + (
        POST_ORDER
    )
    assert "exit 63 (ABORT_STOP) ignored" in res.stderr
    assert "exit 62 (ABORT_CONTINUE)" in res.stderr


def test_embedded_pre_retry_63_stops_the_run_and_the_wal_waits(
    make_home, wal_corpus, recorder: Recorder
) -> None:
    """Barman: the WAL whose pre retry hook says ABORT_STOP is not archived (its post hooks
    still run, with the error), the rest of the batch waits for the next run."""
    home = make_home({"pg1": recorder.commands(ARCHIVE_HOOKS)}, archive_workers=1, **FAST_HOOKS)
    a, b, c = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:3])
    recorder.codes("pre_archive_retry_script", b, 63, 0)
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == [a]
    assert (home.incoming() / b).exists() and (home.incoming() / c).exists()
    assert recorder.order(b) == ORDER + POST_ORDER
    assert recorder.order(c) == []  # never started
    for key in POST_ORDER:
        (env,) = recorder.runs(key, b)
        assert "pre_archive_retry_script exit 63" in env["BARMAN_ERROR"]
    assert f"{b} skipped" in res.stdout
    catalog = open_catalog(home.config)
    try:
        assert catalog.get("pg1", b).state is WalState.CLAIMED
    finally:
        catalog.close()
    # the next run asks again; now the hook says yes
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == [a, b, c]
    assert len(recorder.runs("pre_archive_retry_script", b)) == 2


def test_embedded_retry_hook_gives_up_after_hook_max_attempts(
    make_home, wal_corpus, recorder: Recorder
) -> None:
    """Barman retries forever; walq stops after hook_max_attempts: a pre hook that gave up
    stops like 63 (the WAL waits), a post hook that gave up is logged."""
    home = make_home(
        {"pg1": recorder.commands(["pre_archive_retry_script", "post_archive_retry_script"])},
        archive_workers=1,
        hook_max_attempts=3,
        **FAST_HOOKS,
    )
    a, b = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:2])
    recorder.codes("post_archive_retry_script", a, 1)
    recorder.codes("pre_archive_retry_script", b, 5)
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == [a]
    assert len(recorder.runs("post_archive_retry_script", a)) == 3
    assert len(recorder.runs("pre_archive_retry_script", b)) == 3
    assert (home.incoming() / b).exists()
    assert res.stderr.count("gave up after 3 attempts") == 2


def test_a_hook_past_hook_timeout_is_killed_with_its_children(
    make_home, wal_corpus, recorder: Recorder
) -> None:
    """A standard hook that hangs is killed (whole process group) and archiving goes on;
    a retry hook that hangs counts as a failure and is run again."""
    home = make_home(
        {"pg1": recorder.commands(["pre_archive_script", "pre_archive_retry_script"])},
        archive_workers=1,
        hook_timeout=1,
        hook_retry_sleep=0.05,
    )
    (a,) = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    recorder.codes("pre_archive_script", a, "sleep")
    recorder.codes("pre_archive_retry_script", a, "sleep", 0)
    res = run_walq(home, "archive")
    assert res.returncode == 0, res.stdout + res.stderr
    assert archived(home) == [a]
    assert len(recorder.runs("pre_archive_script", a)) == 1
    assert len(recorder.runs("pre_archive_retry_script", a)) == 2
    assert res.stderr.count("killed after 1 s (hook_timeout)") == 2
    sleeper = int((recorder.root / "sleep.pid").read_text())
    wait_for(lambda: not Path(f"/proc/{sleeper}").exists(), 10, "the hook's child to be gone")


def test_no_hook_configured_costs_nothing(make_home, wal_corpus) -> None:
    """Without hooks the archive path never imports the runner."""
    home = make_home({"pg1": {}}, archive_workers=1)
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    probe = (
        "import sys; from walq.archive.embedded import archive; from walq.config import "
        f"load_config; archive(load_config({str(home.config_path)!r})); "
        "print('walq.hooks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_post_hooks_see_the_s3_url_and_no_credentials(
    make_home, wal_corpus, recorder: Recorder, s3_bucket
) -> None:
    from tests.services.s3 import s3_settings

    home = make_home(
        {"pg1": s3_settings(s3_bucket, compression="lz4", **recorder.commands(POST_ORDER))},
        archive_workers=1,
        **FAST_HOOKS,
    )
    (a,) = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    res = run_walq(home, "archive", aws=True)  # S3 credentials are in walq's environment
    assert res.returncode == 0, res.stdout + res.stderr
    (key,) = [k for k in s3_bucket.object_keys() if a in k]
    for hook in POST_ORDER:
        (env,) = recorder.runs(hook, a)
        assert env["BARMAN_FILE"] == f"s3://{s3_bucket.name}/{key}"
        assert env["BARMAN_COMPRESSION"] == "lz4"
        assert_no_secret(env)
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in env.values()


# --- WAL delete hooks (walq delete --before, walq expire) ----------------------------------------


def backup_file(segment: str, seg_size: int) -> tuple[str, str]:
    """A backup history file for a backup that starts and stops in ``segment``."""
    tli, log, seg = int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16)
    lsn = (log << 32) + seg * seg_size + 0x28
    where = f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X} (file {segment})"
    text = (
        f"START WAL LOCATION: {where}\nSTOP WAL LOCATION: {where}\n"
        f"CHECKPOINT LOCATION: {lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}\nBACKUP METHOD: streamed\n"
        "BACKUP FROM: primary\nSTART TIME: 2026-11-30 08:00:00 UTC\nLABEL: hooks\n"
        f"START TIMELINE: {tli}\nSTOP TIME: 2026-11-30 08:00:01 UTC\nSTOP TIMELINE: {tli}\n"
    )
    return f"{segment}.{0x28:08X}.backup", text


@pytest.mark.parametrize("command", ["delete", "expire"])
def test_delete_hooks_run_around_each_deleted_wal(
    make_home, wal_corpus, recorder: Recorder, command: str
) -> None:
    home = make_home(
        {"pg1": {"retention_policy": "REDUNDANCY 1", **recorder.commands(DELETE_HOOKS)}},
        archive_workers=1,
        **FAST_HOOKS,
    )
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    label, text = backup_file(names[2], wal_corpus.seg_size)
    (home.incoming() / label).write_text(text)
    assert run_walq(home, "archive").returncode == 0
    stored = {name: home.stored(name) for name in names}
    args = ["delete", "pg1", "--before", names[2]] if command == "delete" else ["expire", "pg1"]
    res = run_walq(home, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    gone, kept = names[:2], names[2:]
    for name in gone:
        assert not stored[name].exists()
        assert recorder.order(name) == [
            "pre_wal_delete_script",
            "pre_wal_delete_retry_script",
            "post_wal_delete_retry_script",
            "post_wal_delete_script",
        ]
        for key in DELETE_HOOKS:
            (env,) = recorder.runs(key, name)
            phase = key.split("_", 1)[0]
            assert_no_secret(env)
            assert env["BARMAN_HOOK"] == key.removeprefix(f"{phase}_")
            assert env["BARMAN_PHASE"] == phase
            assert env["BARMAN_RETRY"] == ("1" if "retry" in key else "0")
            assert env["BARMAN_SEGMENT"] == name
            assert env["BARMAN_FILE"] == str(stored[name])  # the archived copy
            assert env["FILE_EXISTS"] == ("1" if phase == "pre" else "0")
            assert env["BARMAN_COMPRESSION"] == "zstd"
            assert env["BARMAN_ERROR"] == ""
            assert env["BARMAN_CONFIGURATION"] == str(home.config_path)
    for name in kept:
        assert stored[name].exists() and recorder.order(name) == []


def test_pre_delete_retry_63_keeps_that_wal_and_later_ones(
    make_home, wal_corpus, recorder: Recorder
) -> None:
    home = make_home({"pg1": recorder.commands(DELETE_HOOKS)}, archive_workers=1, **FAST_HOOKS)
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    assert run_walq(home, "archive").returncode == 0
    recorder.codes("pre_wal_delete_retry_script", names[0], 1, 62)
    recorder.codes("pre_wal_delete_retry_script", names[1], 63, 0)
    res = run_walq(home, "delete", "pg1", "--before", names[3])
    assert res.returncode == 0, res.stdout + res.stderr
    assert not home.stored(names[0]).exists()
    assert home.stored(names[1]).exists() and home.stored(names[2]).exists()
    assert len(recorder.runs("pre_wal_delete_retry_script", names[0])) == 2
    assert recorder.order(names[1]) == ["pre_wal_delete_script", "pre_wal_delete_retry_script"]
    assert recorder.order(names[2]) == []
    assert "deleted 1 file(s)" in res.stdout and "exit 63" in res.stdout
    catalog = open_catalog(home.config)
    try:
        assert catalog.get("pg1", names[1]).state is WalState.ARCHIVED
    finally:
        catalog.close()
    # the next run asks again and deletes the rest
    res = run_walq(home, "delete", "pg1", "--before", names[3])
    assert res.returncode == 0, res.stdout + res.stderr
    assert not home.stored(names[1]).exists() and not home.stored(names[2]).exists()
    assert len(recorder.runs("post_wal_delete_script", names[1])) == 1


# --- fleet -----------------------------------------------------------------------------------------


def test_fleet_hooks_env_and_exit_codes(
    fleet_home, fleet_factory, wal_corpus, recorder: Recorder
) -> None:
    """In the worker that runs the stage: pre hooks before compress, post hooks after
    commit; 0/62 go on, other codes are retried, 63 releases the WAL to a later scan."""
    home = fleet_home(
        {"pg1": {"compression": "zstd"}}, **recorder.commands(ARCHIVE_HOOKS), **FAST_HOOKS
    )
    assert home.run("catalog", "init").returncode == 0
    a, b, c, d = wal_corpus.segments[:4]
    recorder.codes("pre_archive_retry_script", b, 62)
    recorder.codes("pre_archive_retry_script", c, 1, 2, 0)
    recorder.codes("pre_archive_retry_script", d, 63, 0)
    recorder.codes("post_archive_retry_script", a, 63)
    recorder.codes("post_archive_retry_script", b, 1, 0)
    recorder.codes("post_archive_retry_script", c, 62)
    wal_corpus.copy_into(home.incoming(), [a, b, c, d])
    fleet = fleet_factory(home.config_path, **SECRETS)
    fleet.worker("w1")
    fleet.beat()
    try:
        wait_for(lambda: archived(home) == [a, b, c, d], 120, "the fleet to archive all four", 0.25)
        # the post hooks run after the commit: wait for the last one of each WAL
        wait_for(
            lambda: (
                [len(recorder.runs("post_archive_script", n)) for n in (a, b, c, d)] == [1, 1, 1, 2]
            ),
            60,
            "every post_archive_script",
            0.25,
        )
    except TimeoutError:
        raise AssertionError(fleet.logs()) from None
    for name in (a, b, c, d):
        stored = home.stored(name)
        for key in ARCHIVE_HOOKS:
            env = recorder.runs(key, name)[-1]
            phase = key.split("_", 1)[0]
            assert_no_secret(env)
            assert env["BARMAN_SERVER"] == "pg1" and env["BARMAN_PHASE"] == phase
            assert env["BARMAN_CONFIGURATION"] == str(home.config_path)
            assert env["BARMAN_RETRY"] == ("1" if "retry" in key else "0")
            if phase == "pre":
                assert env["BARMAN_FILE"] == str(home.incoming() / name)
                assert env["FILE_EXISTS"] == "1"
            else:
                assert env["BARMAN_FILE"] == str(stored) and env["FILE_EXISTS"] == "1"
                assert env["BARMAN_SIZE"] == str(stored.stat().st_size)
                assert env["BARMAN_COMPRESSION"] == "zstd"
    assert recorder.order(a) == ORDER + POST_ORDER
    assert recorder.order(b) == ORDER + ["post_archive_retry_script"] * 2 + ["post_archive_script"]
    assert recorder.order(c) == ["pre_archive_script"] + ["pre_archive_retry_script"] * 3 + (
        POST_ORDER
    )
    # d: the first chain stopped at 63 (its post hooks ran with the error); a later scan's
    # chain asked again and archived it
    assert recorder.order(d) == ORDER + POST_ORDER + ORDER + POST_ORDER
    first_post = recorder.runs("post_archive_script", d)[0]
    assert "pre_archive_retry_script exit 63" in first_post["BARMAN_ERROR"]
    assert recorder.runs("post_archive_script", d)[1]["BARMAN_ERROR"] == ""
    runs = sum(len(recorder.runs(key, name)) for key in ARCHIVE_HOOKS for name in (a, b, c, d))
    assert runs == 4 + 5 + 6 + 8  # b: post retry twice; c: pre retry thrice; d: two chains
    wait_for(  # one log line per run, written once the run is over
        lambda: fleet.procs[0].output().count("hook pg1 ") == runs, 30, "one log line per run"
    )


def test_fleet_expire_runs_the_delete_hooks_in_the_worker(
    fleet_home, fleet_factory, wal_corpus, recorder: Recorder
) -> None:
    """walq.expire_server, applied like beat applies it: the delete hooks run in the worker,
    without its secrets; a pre retry hook's 63 holds that WAL and later ones back."""
    from tests.services.fleet import celery_client

    home = fleet_home(
        {"pg1": {"retention_policy": "REDUNDANCY 1", **recorder.commands(DELETE_HOOKS)}},
        **FAST_HOOKS,
    )
    assert home.run("catalog", "init").returncode == 0
    names = wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:4])
    label, text = backup_file(names[3], wal_corpus.seg_size)
    (home.incoming() / label).write_text(text)
    assert run_walq(home, "archive").returncode == 0  # a fleet config: the fleet's lock and catalog
    recorder.codes("pre_wal_delete_retry_script", names[1], 1, 0)
    recorder.codes("pre_wal_delete_retry_script", names[2], 63)
    fleet = fleet_factory(home.config_path, **SECRETS)
    fleet.worker("w1")
    result = celery_client(home.config_path).send_task("walq.expire_server", args=["pg1"])
    outcome = result.get(timeout=120)
    assert outcome["status"] == "done" and outcome["deleted"] == 2, outcome
    assert outcome["held_back"] == 1, outcome
    assert not home.stored(names[0]).exists() and not home.stored(names[1]).exists()
    assert home.stored(names[2]).exists()
    assert len(recorder.runs("pre_wal_delete_retry_script", names[1])) == 2
    assert recorder.order(names[2]) == ["pre_wal_delete_script", "pre_wal_delete_retry_script"]
    for name in names[:2]:
        for key in DELETE_HOOKS:
            env = recorder.runs(key, name)[-1]
            assert_no_secret(env)
            assert env["BARMAN_SEGMENT"] == name and env["BARMAN_FILE"] == str(home.stored(name))
    wait_for(
        lambda: fleet.procs[0].output().count("hook pg1 post_wal_delete_script") == 2,
        30,
        "the worker's log lines",
    )
