"""The clients one worker process reuses: built lazily, after the fork, never before."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

from walq.catalog import Catalog, open_catalog
from walq.checksums import new_hasher
from walq.codecs import get_codec
from walq.config import Config, ServerConfig
from walq.locks import ServerLock, open_lock
from walq.storage import Storage, open_storage


class MetaCache:
    """A catalog whose per-server constants (``get_meta``: system identifier, segment
    size) are read once per worker process instead of on every WAL.

    Only values that are set are kept (an unknown identity is re-read until learned,
    so two processes never both learn one). ``set_meta`` through it updates the
    cache; ``forget`` drops a server's values, which the stages do when a WAL
    disagrees with them, so a changed identity is re-read before anything is refused.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._meta: dict[tuple[str, str], str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)

    def get_meta(self, server: str, key: str) -> str | None:
        value = self._meta.get((server, key))
        if value is None:
            value = self._catalog.get_meta(server, key)
            if value is not None:
                self._meta[(server, key)] = value
        return value

    def set_meta(self, server: str, key: str, value: str) -> None:
        self._catalog.set_meta(server, key, value)
        self._meta[(server, key)] = value

    def forget(self, server: str) -> bool:
        """Drop the server's cached values; whether there were any. Safe beside other
        threads of a threads pool (scans, stores) reading and filling the cache."""
        cached = [k for k in list(self._meta) if k[0] == server]
        for k in cached:
            self._meta.pop(k, None)
        return bool(cached)


@dataclass
class Runtime:
    """Catalog, Redis and storage clients of one worker process, shared by the threads
    of a threads pool (scans, stores, commits): each client is built once, under a lock."""

    config: Config
    _catalog: MetaCache | None = None
    _redis: Any = None
    _storages: dict[str, Storage] = field(default_factory=dict)
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            with self._building:  # two threads must not both open a connection pool
                if self._catalog is None:
                    self._catalog = MetaCache(open_catalog(self.config))
        return cast(Catalog, self._catalog)

    def forget_meta(self, server: str) -> bool:
        """Drop the server's cached constants (see MetaCache); whether any were cached."""
        return self._catalog is not None and self._catalog.forget(server)

    @property
    def redis(self) -> Any:
        if self._redis is None and self.config.effective_lock_url:
            import redis  # only fleets with a lock URL need the client

            with self._building:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(
                        self.config.effective_lock_url,
                        socket_timeout=10,
                        socket_connect_timeout=10,
                        health_check_interval=30,
                    )
        return self._redis

    def storage(self, server: ServerConfig) -> Storage:
        found = self._storages.get(server.name)
        if found is None:
            with self._building:
                found = self._storages.get(server.name)
                if found is None:
                    found = self._storages[server.name] = open_storage(server)
        return found

    def lock(self, server: str, purpose: str) -> ServerLock:
        return open_lock(self.config, server, purpose, client=self.redis)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
        self._catalog, self._redis, self._storages = None, None, {}


def preload(config: Config) -> None:
    """Import, once in a worker's parent before it forks its pool, what every child's
    first WAL would otherwise import on its own: the catalog backend, the Redis client,
    and the codec and checksum libraries of the configured servers (each imported
    lazily by walq so that put-wal and get-wal never pay for them). The children
    inherit the modules: N children, one import, and their pages shared."""
    if config.catalog_url:
        import walq.catalog.postgres
    else:
        import walq.catalog.sqlite  # noqa: F401
    if config.effective_lock_url:
        import redis  # noqa: F401
    for server in config.servers.values():
        try:
            new_hasher(server.checksum)  # blake3 unless the server checksums with SHA-256
            get_codec(server.compression).make_compressor(server.compression_level)
        except ImportError:
            continue  # never stops a worker: the stage that needs it reports it, per WAL
