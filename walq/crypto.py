"""GPG encryption as Barman does it (wal-reference.md section 5).

Compress first, then encrypt to ``encryption_key_id`` with gpg's own
compression off; binary OpenPGP public-key encryption, so Barman's
``file``-based detection and plain ``gpg --decrypt`` both read the result.
gpg reads and writes files or pipes directly: no plaintext temporary copy is
ever made. Decryption streams through ``gpg --pinentry-mode loopback`` with
the passphrase from ``encryption_passphrase_command``, run once per process
through the shell (like Barman) and handed to gpg on a private pipe: never in
argv, never in the environment, never in a message or a log line.

``GNUPGHOME`` (the keyring) comes from the environment like any gpg call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from walq.chunks import read_chunks
from walq.config import ServerConfig
from walq.errors import ConfigError, CryptoError, clip

READ_CHUNK = 256 << 10
_passphrases: dict[str, bytes] = {}
_passphrase_lock = threading.Lock()


def gpg_binary() -> str:
    found = os.environ.get("WALQ_GPG") or shutil.which("gpg") or shutil.which("gpg2")
    if not found:
        raise CryptoError("gpg not found on PATH (encryption = 'gpg' needs GnuPG 2)")
    return found


def _base_args() -> list[str]:
    return [gpg_binary(), "--batch", "--yes", "--no-tty"]


def _summary(stderr: bytes) -> str:
    """gpg's own reason, in words an operator can act on (gpg never prints passphrases)."""
    text = stderr.decode(errors="replace")
    low = text.lower()
    if "bad passphrase" in low:
        return "Bad passphrase (check encryption_passphrase_command)"
    if "no passphrase given" in low:
        return "No passphrase given (set encryption_passphrase_command)"
    if "no secret key" in low:
        return "No secret key for this data in the keyring (GNUPGHOME)"
    if "no public key" in low or "unusable public key" in low or "skipped:" in low:
        return "the encryption key is missing or unusable (check encryption_key_id and GNUPGHOME)"
    if "expired" in low:
        return "the encryption key has expired"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[-3:]) or "gpg failed without a message"


def encrypt_file(src: Path, dst: Path, server: ServerConfig) -> None:
    """Encrypt ``src`` into ``dst`` for ``encryption_key_id`` (compress-level 0, binary)."""
    if not server.encryption_key_id:
        raise ConfigError(
            f"servers.{server.name}.encryption_key_id is required for encryption = 'gpg'"
        )
    cmd = [
        *_base_args(),
        "--trust-model",
        "always",
        "--compress-level",
        "0",
        "--recipient",
        server.encryption_key_id,
        "--encrypt",
        "--output",
        str(dst),
        str(src),
    ]
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        Path(dst).unlink(missing_ok=True)
        raise CryptoError(f"gpg encryption of {src.name} failed: {exc}") from None
    if res.returncode != 0:
        Path(dst).unlink(missing_ok=True)
        raise CryptoError(
            f"gpg cannot encrypt to {clip(server.encryption_key_id)}: {_summary(res.stderr)}"
        )


def passphrase(server: ServerConfig) -> bytes | None:
    """The private key's passphrase, from encryption_passphrase_command (cached per process)."""
    command = server.encryption_passphrase_command
    if not command:
        return None
    with _passphrase_lock:
        cached = _passphrases.get(command)
        if cached is not None:
            return cached
        try:
            res = subprocess.run(
                command, shell=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CryptoError(
                f"encryption_passphrase_command failed to run: {type(exc).__name__}"
            ) from None
        if res.returncode != 0:
            raise CryptoError(f"encryption_passphrase_command exited {res.returncode}")
        value = res.stdout.rstrip(b"\r\n")
        if not value:
            raise CryptoError("encryption_passphrase_command printed an empty passphrase")
        _passphrases[command] = value
        return value


def forget_passphrases() -> None:
    with _passphrase_lock:
        _passphrases.clear()


def decrypt_chunks(chunks: Iterable[bytes], server: ServerConfig) -> Iterator[bytes]:
    """Stream ciphertext through ``gpg --decrypt``; yield plaintext in bounded pieces."""
    secret = passphrase(server)
    cmd = [*_base_args(), "--pinentry-mode", "loopback"]
    pass_fds: tuple[int, ...] = ()
    read_fd = write_fd = -1
    if secret is not None:
        read_fd, write_fd = os.pipe()
        cmd += ["--passphrase-fd", str(read_fd)]
        pass_fds = (read_fd,)
    cmd += ["--decrypt"]
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            pass_fds=pass_fds,
        )
    except OSError as exc:
        stderr_file.close()
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        raise CryptoError(f"cannot run gpg: {exc.strerror}") from None
    if secret is not None:
        os.close(read_fd)
        # A passphrase is far smaller than a pipe buffer: this write cannot block.
        os.write(write_fd, secret + b"\n")
        os.close(write_fd)
    feed_error: list[BaseException] = []

    def feed() -> None:
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # gpg gave up; its exit status says why
        except BaseException as exc:  # a storage read failed: surface it to the reader
            feed_error.append(exc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    feeder = threading.Thread(target=feed, name="walq-gpg-feed", daemon=True)
    feeder.start()
    finished = False
    try:
        assert proc.stdout is not None
        yield from read_chunks(proc.stdout, READ_CHUNK)
        proc.wait()
        feeder.join()
        finished = True
    finally:
        if not finished:
            proc.kill()
            proc.wait()
            feeder.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        stderr_file.seek(0)
        err = stderr_file.read()
        stderr_file.close()
    if feed_error:
        raise feed_error[0]
    if proc.returncode != 0:
        raise CryptoError(f"gpg cannot decrypt: {_summary(err)}")


def check_key(server: ServerConfig) -> str:
    """Encrypt a probe to the key; with a passphrase command, decrypt it too. Returns a detail line."""
    with tempfile.TemporaryDirectory(prefix="walq-gpg-check-") as tmp:
        src = Path(tmp) / "probe"
        dst = Path(tmp) / "probe.gpg"
        src.write_bytes(b"walq encryption check\n")
        encrypt_file(src, dst, server)
        if not server.encryption_passphrase_command:
            return f"encrypts to {server.encryption_key_id}"  # walq.status reports decryption as skipped
        with open(dst, "rb") as f:
            plain = b"".join(decrypt_chunks(read_chunks(f, READ_CHUNK), server))
        if plain != src.read_bytes():
            raise CryptoError("gpg round trip returned different bytes")
    return f"encrypts to and decrypts from {server.encryption_key_id}"
