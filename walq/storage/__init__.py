"""Storage backends behind one protocol: local (Barman layout) and s3 (barman-cloud layout)."""

from __future__ import annotations

from walq.config import ServerConfig
from walq.storage.base import PutRequest, Storage, StoredObject

__all__ = ["PutRequest", "Storage", "StoredObject", "open_storage"]


def open_storage(server: ServerConfig) -> Storage:
    """Build the backend a server's storage_url names (S3 imports boto3 lazily)."""
    assert server.storage_url is not None
    if server.storage_url.startswith("s3://"):
        from walq.storage.s3 import S3Storage

        return S3Storage(server)
    from walq.storage.local import LocalStorage

    return LocalStorage(server.local_wals_dir, server.name, server.barman_lock_directory)  # type: ignore[arg-type]
