"""A forged ``walq.commit`` (anyone with Flower or broker access can apply one) must
never remove a WAL that is not archived, nor make get-wal serve another file.

The issue's attack: a commit naming ``key="/etc/passwd"`` with that file's real size
and sha256, for a WAL still waiting in incoming/ or streaming/. Before the fix a
real worker answered "archived", deleted the WAL and get-wal served /etc/passwd."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest

from tests.services.fleet import (
    celery_client,
    http,
    pending,
    wait_flower,
)
from tests.services.homes import WalqHome, xlogdb_names
from tests.services.pg import free_port
from walq.catalog import WalState, open_catalog
from walq.fleet import stages as fleet
from walq.storage.local import LocalStorage

PASSWD = Path("/etc/passwd")
AUTH = "operator:s3cret-pass"


def _forged(
    home: WalqHome, wal: str, origin: str, key: str, **changes: object
) -> dict[str, object]:
    """A complete, well-typed StoredArgs whose key points at /etc/passwd's bytes."""
    data = PASSWD.read_bytes()
    chain = uuid.uuid4().hex
    source_dir = home.incoming() if origin == "incoming" else home.server_dir() / "streaming"
    args = {
        "server": "pg1",
        "wal": wal,
        "source": str(source_dir / wal),
        "origin": origin,
        "chain": chain,
        "payload": str(home.home / "spool" / "pg1" / chain / f"{wal}.{origin}.none"),
        "codec": "none",
        "encrypted": False,
        "size": len(data),
        "checksum": hashlib.sha256(data).hexdigest(),
        "mtime": 0.0,
        "key": key,
        "stored_size": len(data),
        "stored_codec": "none",
        "stored_encrypted": False,
    }
    return {**args, **changes}


def _forged_keys(wal: str) -> list[str]:
    return [
        str(PASSWD),
        "../../../../../../../../etc/passwd",
        f"{wal[:16]}/../../../../../../../../etc/passwd",
        f"{wal[:16]}/000000010000000000000001",  # another WAL's key
        LocalStorage(Path("/"), "pg1").key_for(wal),  # this WAL's key, but nothing stored there
    ]


def test_forged_commit_through_a_real_worker_touches_nothing(
    fleet_home, wal_corpus, fleet_factory
) -> None:
    home = fleet_home()
    claimed, unclaimed = wal_corpus.segments[5], wal_corpus.segments[6]
    wal_corpus.copy_into(home.incoming(), [claimed])
    wal_corpus.copy_into(home.server_dir() / "streaming", [unclaimed])
    digests = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (home.incoming() / claimed, home.server_dir() / "streaming" / unclaimed)
    }
    catalog = open_catalog(home.config)
    try:
        assert catalog.claim("pg1", claimed, str(home.incoming() / claimed), 600)  # a scan found it
        fleet_proc = fleet_factory(home.config_path)
        port = free_port()
        flower = fleet_proc.flower(port, AUTH)
        fleet_proc.worker("w1")  # no beat: nothing but our calls runs
        client = celery_client(home.config_path)
        base = wait_flower(flower, port)
        for wal, origin in ((claimed, "incoming"), (unclaimed, "streaming")):
            for i, key in enumerate(_forged_keys(wal)):
                forged = _forged(home, wal, origin, key)
                if i == 0:  # the call, through Flower's HTTP API with its credentials
                    status, body = http(
                        "POST",
                        f"{base}/api/task/async-apply/walq.commit",
                        {"args": [forged]},
                        auth=AUTH,
                    )
                    assert status == 200 and body.get("task-id"), (status, body)
                    result = client.AsyncResult(body["task-id"])
                else:
                    result = client.send_task("walq.commit", args=[forged])
                result.get(timeout=60, propagate=False)
                assert result.state == "FAILURE", (wal, key, result.state, result.result)
                assert "refused" in str(result.result), (key, str(result.result))
        assert catalog.get("pg1", claimed).state is WalState.CLAIMED
        assert catalog.get("pg1", unclaimed) is None
        assert catalog.counts("pg1")["archived"] == 0
    finally:
        catalog.close()
    assert pending(home.incoming()) == [claimed]
    assert pending(home.server_dir() / "streaming") == [unclaimed]
    for path in (home.incoming() / claimed, home.server_dir() / "streaming" / unclaimed):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[path.name]
    assert xlogdb_names(home.wals()) == []
    assert "Retry in" not in fleet_proc.logs(tail=0), "a refused commit is never retried"
    for wal in (claimed, unclaimed):
        dest = home.root / f"restored-{wal}"
        res = home.run("get-wal", "pg1", wal, str(dest))
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)  # not in the archive
        assert not dest.exists()


def _stored_args(home: WalqHome, wal_corpus) -> tuple[fleet.Runtime, dict[str, object]]:
    wal_corpus.copy_into(home.incoming(), wal_corpus.segments[:1])
    rt = fleet.Runtime(home.config)
    job = fleet.scan_server(rt, "pg1")[0]
    return rt, fleet.store_stage(rt, fleet.encrypt_stage(rt, fleet.compress_stage(rt, job)))


@pytest.mark.parametrize("change", ["stored_size", "key_of_a_symlink", "payload_of_another_chain"])
def test_commit_verifies_the_stored_object_before_removing_the_source(
    make_home,
    wal_corpus,
    change: str,
) -> None:
    """Well-formed arguments that storage contradicts: refused, source and row untouched."""
    home = make_home()
    rt, stored = _stored_args(home, wal_corpus)
    wal = stored["wal"]
    target = home.wals() / str(stored["key"])
    if change == "stored_size":
        stored = {**stored, "stored_size": int(stored["stored_size"]) + 1}
    elif change == "key_of_a_symlink":  # the object at the key is a link to a file outside wals/
        outside = home.root / "outside"
        shutil.copyfile(target, outside)
        target.unlink()
        target.symlink_to(outside)
    else:  # another chain's payload of the same WAL: not the bytes stored at the key
        other = Path(str(stored["payload"])).parent.with_name("e" * 32)
        other.mkdir()
        (other / Path(str(stored["payload"])).name).write_bytes(b"x" * int(stored["stored_size"]))
        stored = {
            **stored,
            "chain": "e" * 32,
            "payload": str(other / Path(str(stored["payload"])).name),
        }
    with pytest.raises(fleet.TaskArgumentError, match="refused"):
        fleet.commit_stage(rt, stored)
    assert rt.catalog.get("pg1", wal).state is WalState.CLAIMED
    assert (home.incoming() / wal).exists()
    assert xlogdb_names(home.wals()) == []
    rt.close()


def test_a_commit_for_an_archived_wal_judges_the_source_by_its_own_bytes(
    make_home, wal_corpus
) -> None:
    """A forged commit carrying the archived checksum must not delete a *different*
    file waiting under that WAL's name: it is parked in errors/, as a scan would."""
    home = make_home()
    rt, stored = _stored_args(home, wal_corpus)
    wal = str(stored["wal"])
    assert fleet.commit_stage(rt, stored).status == "archived"
    different = wal_corpus.path(wal_corpus.segments[1]).read_bytes()
    (home.incoming() / wal).write_bytes(different)
    replay = {
        **stored,
        "chain": "d" * 32,
        "payload": str(
            Path(str(stored["payload"])).parent.with_name("d" * 32)
            / Path(str(stored["payload"])).name
        ),
    }
    outcome = fleet.commit_stage(rt, replay)
    assert outcome.status == "rejected", outcome
    assert not (home.incoming() / wal).exists()
    parked = list(home.errors().iterdir())
    assert len(parked) == 1 and parked[0].read_bytes() == different
    rt.close()
