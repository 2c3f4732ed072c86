"""A prefork worker imports what its stages need once, in its parent, before forking:
each child inherits the catalog backend, the Redis client and the servers' codec and
checksum libraries instead of importing them on its first WAL (walq.fleet.runtime.preload)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.services.fleet import REPO
from tests.services.homes import WalqHome
from tests.services.pg import wait_for

STAGE_MODULES = ("psycopg", "psycopg_pool", "redis", "zstandard", "lz4.frame", "blake3")


def _imported_after_preload(config_path: Path) -> dict[str, list[bool]]:
    """In a fresh interpreter: which STAGE_MODULES are loaded before and after preload."""
    code = (
        "import json, sys\n"
        "from walq.config import load_config\n"
        "from walq.fleet.runtime import preload\n"
        f"mods = {STAGE_MODULES!r}\n"
        f"config = load_config({str(config_path)!r})\n"
        "before = [m in sys.modules for m in mods]\n"
        "preload(config)\n"
        "print(json.dumps({'before': before, 'after': [m in sys.modules for m in mods]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_preload_imports_what_the_configured_servers_use(fleet_home) -> None:
    home: WalqHome = fleet_home(
        {"pg1": {"compression": "zstd"}, "pg2": {"compression": "lz4", "checksum": "blake3"}}
    )
    seen = _imported_after_preload(home.config_path)
    assert seen["before"] == [False] * len(STAGE_MODULES), "walq imports them lazily"
    assert seen["after"] == [True] * len(STAGE_MODULES)


def test_preload_leaves_out_codecs_no_server_uses(fleet_home) -> None:
    home: WalqHome = fleet_home({"pg1": {"compression": "none", "checksum": "sha256"}})
    seen = dict(zip(STAGE_MODULES, _imported_after_preload(home.config_path)["after"], strict=True))
    assert seen == {
        "psycopg": True,
        "psycopg_pool": True,
        "redis": True,
        "zstandard": False,
        "lz4.frame": False,
        "blake3": False,
    }


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_prefork_children_inherit_the_modules_before_any_task(fleet_home, fleet_factory) -> None:
    home: WalqHome = fleet_home({"pg1": {"compression": "zstd"}})
    assert home.run("catalog", "init").returncode == 0
    fleet = fleet_factory(home.config_path)
    worker = fleet.worker("w1", concurrency=2)  # no beat: no task ever runs
    children = wait_for(
        lambda: (c := _children(worker.pid)) and len(c) >= 2 and c, 30, "the pool's children"
    )
    assert "Task walq." not in worker.output()
    for child in children:
        maps = _mapped(child)
        # the extension modules' shared objects: mapped only once imported
        for lib in ("zstandard", "blake3", "psycopg_binary"):
            assert f"/{lib}/" in maps, f"child {child} of {worker.pid} has no {lib} loaded"
    assert os.getpid() not in children


def test_a_missing_codec_library_does_not_stop_the_preload(fleet_home, monkeypatch) -> None:
    """Fault injected: zstandard unimportable. The worker still starts (the compress
    stage reports the missing library per WAL, as before); the rest is preloaded."""
    from walq.config import load_config
    from walq.fleet.runtime import preload

    home: WalqHome = fleet_home({"pg1": {"compression": "zstd"}, "pg2": {"compression": "lz4"}})
    monkeypatch.setitem(sys.modules, "zstandard", None)  # `import zstandard` raises ImportError
    monkeypatch.delitem(sys.modules, "lz4.frame", raising=False)
    preload(load_config(home.config_path))
    assert sys.modules.get("lz4.frame") is not None
