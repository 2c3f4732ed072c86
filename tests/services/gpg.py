"""A throwaway GnuPG keyring for tests: one RSA key with a passphrase.

Subprocesses (walq, gpg) find it through GNUPGHOME; in-process code gets it
through monkeypatch. The home lives under /tmp/walq-tests with a short path
(gpg-agent's socket path has a length limit) and mode 700 (gpg insists).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services.pg import as_postgres, chown_postgres
from tests.services.scratch import fresh_dir

PASSPHRASE = "walq-test-passphrase"  # throwaway key, throwaway passphrase
UID = "walq test <walq-test@example.invalid>"


@dataclass
class GpgKey:
    home: Path
    fingerprint: str
    passphrase_file: Path

    @property
    def passphrase_command(self) -> str:
        return f"cat {self.passphrase_file}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(base if base is not None else os.environ)
        env["GNUPGHOME"] = str(self.home)
        return env

    def gpg(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["gpg", "--batch", "--yes", "--no-tty", *args],
            input=input,
            capture_output=True,
            env=self.env(),
            check=check,
            timeout=120,
        )


def gpg_settings(key: GpgKey, **extra: object) -> dict[str, object]:
    return {
        "encryption": "gpg",
        "encryption_key_id": key.fingerprint,
        "encryption_passphrase_command": key.passphrase_command,
        **extra,
    }


def make_key(root: Path, as_pg: bool = False) -> GpgKey:
    """Generate the key (as the postgres OS user when ``as_pg``, for restore_command)."""
    home = root / f"g{uuid.uuid4().hex[:6]}"
    home.mkdir(mode=0o700, parents=True)
    # No passphrase caching in gpg-agent: every decryption must prove the passphrase.
    (home / "gpg-agent.conf").write_text(
        "default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"
    )
    pf = root / "passphrase"
    pf.write_text(PASSPHRASE + "\n")
    os.chmod(pf, 0o600)
    prefix: list[str] = []
    if as_pg:
        chown_postgres(root)
        prefix = as_postgres()
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(
        [
            *prefix,
            "env",
            f"GNUPGHOME={home}",
            "gpg",
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase-file",
            str(pf),
            "--quick-gen-key",
            UID,
            "rsa2048",
            "sign,encr",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [
            *prefix,
            "env",
            f"GNUPGHOME={home}",
            "gpg",
            "--batch",
            "--with-colons",
            "--list-secret-keys",
            UID,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    return GpgKey(home, fpr, pf)


def stop_agent(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env=dict(os.environ, GNUPGHOME=str(home)),
        capture_output=True,
        timeout=30,
    )


@pytest.fixture(scope="session")
def gpg_key() -> Iterator[GpgKey]:
    """A session keyring with one passphrase-protected RSA key."""
    root = fresh_dir("gpg")
    os.chmod(root, 0o700)
    key = make_key(root)
    yield key
    stop_agent(key.home)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gpg_env(gpg_key: GpgKey, monkeypatch: pytest.MonkeyPatch) -> GpgKey:
    """gpg_key with GNUPGHOME set for in-process code and child processes."""
    monkeypatch.setenv("GNUPGHOME", str(gpg_key.home))
    from walq.crypto import forget_passphrases

    forget_passphrases()
    return gpg_key
