"""Point-in-time recovery from GPG-encrypted, zstd-compressed WAL on S3, through walq get-wal.

Everything runs as the postgres OS user, as in production: put-wal from
archive_command, ``walq archive`` to SeaweedFS with a named AWS profile (a
credentials file, no keys in the environment or the config), and get-wal from
restore_command decrypting with encryption_passphrase_command.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.services.gpg import make_key
from tests.services.homes import WalqHome, walq_command
from tests.services.pg import as_postgres, chown_postgres
from tests.services.pitr import recovered_to_restore_point, run_past_restore_point_and_archive
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, Bucket, s3_settings


def test_pitr_from_encrypted_compressed_wal_on_s3(
    make_home,
    s3_bucket: Bucket,
    cluster_factory,
    workdir: Path,
    walq_runnable_by_postgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyroot = workdir / "gpg"
    keyroot.mkdir()
    key = make_key(keyroot, as_pg=True)
    creds = workdir / "aws-credentials"
    creds.write_text(
        f"[walqtest]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    os.chmod(creds, 0o600)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": "/dev/null",
        "GNUPGHOME": str(key.home),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    prefix = " ".join(f"{k}={v}" for k, v in env.items())

    home: WalqHome = make_home(
        {
            "pg1": s3_settings(
                s3_bucket,
                compression="zstd",
                s3_profile="walqtest",
                s3_region="us-east-1",
                encryption="gpg",
                encryption_key_id=key.fingerprint,
                encryption_passphrase_command=key.passphrase_command,
            )
        },
        archive_workers=1,
    )
    chown_postgres(workdir)
    try:
        assert home.run("check", "pg1", as_pg=True).stdout.count("OK") >= 2
        at_restore_point, at_end = run_past_restore_point_and_archive(
            cluster_factory, home, workdir / "base", "walq_s3_rp"
        )
        assert list(home.incoming().iterdir()) == []
        keys = s3_bucket.object_keys()
        segments = [k for k in keys if not k.endswith(".backup.zst.gpg") and ".history" not in k]
        assert len(segments) >= 3 and all(k.endswith(".zst.gpg") for k in keys), keys
        res = home.run("verify", "pg1", as_pg=True)
        assert res.returncode == 0, res.stdout + res.stderr

        restore_cmd = f"'env {prefix} {walq_command(home, 'get-wal pg1 %f %p --prefetch 4')}'"
        with recovered_to_restore_point(
            workdir / "to_point", workdir / "base", restore_cmd, "walq_s3_rp"
        ) as to_point:
            assert to_point.accounts_fingerprint() == at_restore_point
            assert "restored log file" in to_point.log()
    finally:
        subprocess.run(
            [*as_postgres(), "env", f"GNUPGHOME={key.home}", "gpgconf", "--kill", "gpg-agent"],
            capture_output=True,
            timeout=30,
        )
