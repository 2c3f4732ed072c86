"""The two ways out for walq's metrics: a textfile (``walq metrics``) and HTTP (``walq exporter``).

- ``write_textfile``: Prometheus' text format, written to a temporary name in the
  target directory, fsynced and renamed over the target, so node_exporter's textfile
  collector never reads half a file. The file gets walq's file mode (``group_access``
  decides whether node_exporter's group may read it).
- ``serve``: a single-threaded HTTP server; ``GET /metrics`` runs one scrape. One scrape
  at a time keeps the catalog handle in one thread and the load on the catalog bounded
  however many Prometheus servers scrape it. A client gets ``SCRAPE_SOCKET_TIMEOUT``
  seconds to send its request, so a stuck one cannot block the others forever.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from walq.errors import ConfigError
from walq.fsutil import fsync_dir, open_private

SCRAPE_SOCKET_TIMEOUT = 30.0


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def write_textfile(registry: CollectorRegistry, target: Path) -> None:
    """Write the scrape to ``target`` atomically (temporary name, fsync, rename)."""
    data = render(registry)
    directory = target.parent
    if not directory.is_dir():
        raise ConfigError(f"metrics: --output {target}: {directory} is not a directory")
    temp = directory / f".{target.name}.walq-tmp-{os.getpid()}"
    try:
        fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"metrics: --output {target}: {exc.strerror or exc}") from None
    fsync_dir(directory)


class _Server(HTTPServer):
    def __init__(self, address: tuple[str, int], registry: CollectorRegistry) -> None:
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SCRAPE_SOCKET_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        return  # a scrape every 15 s is not news

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, render(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/":
            self._send(200, b"walq exporter: metrics at /metrics\n", "text/plain")
        else:
            self._send(404, b"not found: try /metrics\n", "text/plain")

    do_HEAD = do_GET


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve /metrics until interrupted; a port that cannot be bound is a one-line error."""
    try:
        httpd = _Server((host, port), registry)
    except OSError as exc:
        raise ConfigError(
            f"exporter: --listen {host}:{port}: cannot listen: {exc.strerror or exc}"
        ) from None
    print(f"walq exporter: serving http://{host}:{port}/metrics", file=sys.stderr, flush=True)
    with httpd:
        httpd.serve_forever()
