"""Storage backends behind one protocol: local (Barman layout) and s3 (barman-cloud layout)."""

from __future__ import annotations

from walq.config import ServerConfig
from walq.storage.base import PutRequest, Storage, StoredObject

__all__ = ["PutRequest", "Storage", "StoredObject", "open_storage"]


def open_storage(server: ServerConfig) -> Storage:
    """Build the backend a server's storage_url names (S3 imports boto3 lazily)."""
    wals = server.local_wals_dir
    if wals is None:  # s3://
        from walq.storage.s3 import S3Storage

        return S3Storage(server)
    from walq.storage.local import LocalStorage

    return LocalStorage(wals, server.name, server.barman_lock_directory)
