"""``walq metrics`` and ``walq exporter``: which servers, where the text goes.

Light to import (cli.py uses ``parse_listen`` while parsing arguments):
prometheus_client is imported only when one of the two commands runs.
"""

from __future__ import annotations

from pathlib import Path

from walq.config import Config, ServerConfig


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9187`` for IPv6) -> (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9187 (got {text[:80]!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"bad host in HOST:PORT (got {text[:80]!r})")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535 (got {text[:80]!r})")
    return host, int(port)


def _selected(config: Config, names: list[str]) -> list[ServerConfig]:
    return [config.server(n) for n in names] if names else list(config.servers.values())


def run_metrics(config: Config, names: list[str], output: Path | None) -> int:
    """One scrape: to stdout, or atomically to ``output`` (node_exporter's textfile collector)."""
    import sys

    from walq.metrics.collector import CatalogSource, WalqCollector, make_registry
    from walq.metrics.serve import render, write_textfile

    source = CatalogSource(config)
    try:
        registry = make_registry(WalqCollector(config, _selected(config, names), source))
        if output is None:
            sys.stdout.buffer.write(render(registry))
        else:
            write_textfile(registry, output)
    finally:
        source.close()
    return 0


def run_exporter(config: Config, names: list[str], listen: tuple[str, int]) -> int:
    """Serve /metrics until stopped; each scrape computes afresh (no background work)."""
    from walq.metrics.collector import CatalogSource, WalqCollector, make_registry
    from walq.metrics.serve import serve

    source = CatalogSource(config)
    try:
        serve(make_registry(WalqCollector(config, _selected(config, names), source)), *listen)
    finally:
        source.close()
    return 0
