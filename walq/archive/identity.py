"""The cluster a server's WAL must come from: its system identifier and segment size.

One place reads them from the catalog (``server_identity`` and its two halves) and one rule learns
or enforces them (``adopt_identity``): a WAL's header teaches them on first
sight, as PostgreSQL itself does when ``conninfo`` is set; after that a
different identifier is refused. Light on purpose: put-wal and get-wal may use it.
"""

from __future__ import annotations

from walq.catalog.base import Catalog
from walq.config import ServerConfig


def known_system_identifier(catalog: Catalog, server: ServerConfig) -> int | None:
    """The identifier this server's WAL must carry, None while unknown: the configured
    one wins over the one learned into the catalog."""
    return (
        server.system_identifier
        or int(catalog.get_meta(server.name, "system_identifier") or 0)
        or None
    )


def known_segment_size(catalog: Catalog, server: ServerConfig) -> int | None:
    """The segment size learned into the catalog, None while unknown."""
    return int(catalog.get_meta(server.name, "wal_segment_size") or 0) or None


def server_identity(catalog: Catalog, server: ServerConfig) -> tuple[int | None, int | None]:
    """(system identifier, segment size) this server's WAL must carry, None while unknown."""
    return known_system_identifier(catalog, server), known_segment_size(catalog, server)


def adopt_identity(
    catalog: Catalog, server: ServerConfig, sysid: int, seg_size: int | None
) -> int | None:
    """Record the identity on first sight; return the known system identifier when
    ``sysid`` conflicts with it (the caller says why, in its own words)."""
    known, known_seg = server_identity(catalog, server)
    if known and known != sysid:
        return known
    if not known:
        catalog.set_meta(server.name, "system_identifier", str(sysid))
    if seg_size and not known_seg:
        catalog.set_meta(server.name, "wal_segment_size", str(seg_size))
    return None
