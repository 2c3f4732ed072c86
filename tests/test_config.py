"""Configuration contract: defaults, env overrides, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from walq.cli import main
from walq.config import load_config
from walq.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "walq.toml"
    path.write_text(text)
    return path


def test_defaults_fill_server_dirs(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, f'home = "{tmp_path}"\n[servers.pg1]\n'))
    s = cfg.server("pg1")
    assert s.incoming_dir == tmp_path / "pg1" / "incoming"
    assert s.errors_dir == tmp_path / "pg1" / "errors"
    assert s.storage_url == f"file://{tmp_path}/pg1/wals"
    assert s.compression == "zstd" and not cfg.fleet


def test_checksum_is_per_server_with_a_top_level_default(tmp_path: Path) -> None:
    text = f'home = "{tmp_path}"\n[servers.pg1]\n[servers.pg2]\nchecksum = "sha256"\n'
    cfg = load_config(_write(tmp_path, text))
    assert (cfg.server("pg1").checksum, cfg.server("pg2").checksum) == ("blake3", "sha256")
    cfg = load_config(_write(tmp_path, 'checksum = "sha256"\n' + text))
    assert (cfg.server("pg1").checksum, cfg.server("pg2").checksum) == ("sha256", "sha256")
    text = f'home = "{tmp_path}"\nchecksum = "sha256"\n[servers.pg1]\nchecksum = "blake3"\n'
    assert load_config(_write(tmp_path, text)).server("pg1").checksum == "blake3"


def test_env_overrides_file(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, f'home = "{tmp_path}"\n[servers.pg1]\ncompression = "lz4"\n')
    monkeypatch.setenv("WALQ_SERVERS__PG1__COMPRESSION", "gzip")
    monkeypatch.setenv("WALQ_BATCH", "ignored")
    assert load_config(path).server("pg1").compression == "gzip"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[servers.pg1]\ncompression = "zip"\n', "servers.pg1.compression"),
        ('[servers.pg1]\ncompresion = "zstd"\n', "servers.pg1.compresion: unknown key"),
        ("bogus = 1\n", "bogus: unknown key"),
        ("[servers.pg1]\nbatch_size = -1\n", "servers.pg1.batch_size"),
        ('[servers.pg1]\nstorage_url = "ftp://x"\n', "servers.pg1.storage_url"),
        ('[servers.pg1]\nencryption = "gpg"\n', "encryption_key_id"),
        ('[servers."a..b"]\n', "invalid"),
        ('[servers.pg1]\nworker_group = "east/1"\n', "servers.pg1.worker_group"),
        ('task_events = "sometimes"\n', "task_events"),
        ("this is not toml", "walq.toml"),
        ('[servers.pg1]\nchecksum = "md5"\n', "servers.pg1.checksum: Input should be 'blake3' or"),
        ('checksum = "crc32"\n[servers.pg1]\n', "checksum: Input should be 'blake3' or 'sha256'"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, fragment: str, capsys) -> None:
    path = _write(tmp_path, f'home = "{tmp_path}"\n' + text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert main(["--config", str(path), "status"]) == 2
    assert fragment in capsys.readouterr().err


def test_uncreatable_directory_names_the_key(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = _write(
        tmp_path, f'home = "{tmp_path}"\n[servers.pg1]\nincoming_dir = "{blocker}/incoming"\n'
    )
    assert main(["--config", str(path), "archive"]) == 2
    assert "servers.pg1.incoming_dir" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 2
    assert "nope.toml" in capsys.readouterr().err
