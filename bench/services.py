"""Services the benchmark starts on loopback: SeaweedFS S3 (HTTP and HTTPS), and for
the fleet a private Redis and a throwaway catalog database.

The S3 server is the test helper (tests/services/s3.py) with an HTTPS listener
added, because pgBackRest only talks TLS to S3; walq and barman-cloud use its
plain-HTTP port, as the test suite does.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Self

from tests.services.pg import free_port
from tests.services.s3 import SSE_KEY, SeaweedS3


class BenchS3(SeaweedS3):
    """SeaweedS3 plus ``-s3.port.https`` with a self-signed certificate for 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.https_port = free_port()
        self.cert = root / "s3.crt"
        self.key = root / "s3.key"

    def _make_cert(self) -> None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )

    volume_size_limit_mb = 512
    volume_max = 400

    def command(self) -> list[str]:
        return [
            *super().command(),
            f"-s3.port.https={self.https_port}",
            f"-s3.cert.file={self.cert}",
            f"-s3.key.file={self.key}",
        ]

    def server_environment(self) -> dict[str, str]:
        return dict(os.environ, WEED_S3_SSE_KEY=SSE_KEY)

    def start(self, timeout: float = 90) -> Self:
        self._make_cert()
        return super().start(timeout)

    def bucket(self, prefix: str = "bench") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys})
            client.delete_bucket(Bucket=name)
        except Exception:  # best effort: the whole server is removed at the end
            pass

    def pids(self) -> list[int]:
        """The weed process (for its CPU, reported separately: it is the store, not a client)."""
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []


def process_cpu_seconds(pid: int) -> float:
    """utime+stime of one process and its reaped children, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (a fleet process and its pool children)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                out.append(int(p.name))
    return out


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of a process group's live processes (and the children they reaped)."""
    return sum(process_cpu_seconds(pid) for pid in group_pids(pgid))


class CatalogDB:
    """A throwaway database on the machine's PostgreSQL for the fleet catalog."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"walq_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> CatalogDB:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    @property
    def url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def fresh_schema(self) -> str:
        from tests.services.fleet import fresh_schema_url

        return fresh_schema_url(self.url)

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
