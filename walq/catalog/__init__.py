"""Catalog backends: sqlite (embedded) and postgres (fleet)."""

from __future__ import annotations

from walq.catalog.base import ArchivedInfo, Catalog, Claims, WalRecord, WalState
from walq.config import Config

__all__ = ["ArchivedInfo", "Catalog", "Claims", "WalRecord", "WalState", "open_catalog"]


def open_catalog(config: Config, *, readonly: bool = False) -> Catalog:
    """SQLite under home unless catalog_url names a PostgreSQL database."""
    if config.catalog_url:
        from walq.catalog.postgres import PostgresCatalog

        return PostgresCatalog(config.catalog_url)
    from walq.catalog.sqlite import SqliteCatalog

    return SqliteCatalog(config.catalog_path, readonly=readonly)
