"""The clients one worker process reuses: built lazily, after the fork, never before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from walq.catalog import Catalog, open_catalog
from walq.config import Config, ServerConfig
from walq.locks import ServerLock, open_lock
from walq.storage import Storage, open_storage


@dataclass
class Runtime:
    """Catalog, Redis and storage clients of one worker process."""

    config: Config
    _catalog: Catalog | None = None
    _redis: Any = None
    _storages: dict[str, Storage] = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.config)
        return self._catalog

    @property
    def redis(self) -> Any:
        if self._redis is None and self.config.effective_lock_url:
            import redis  # only fleets with a lock URL need the client

            self._redis = redis.Redis.from_url(
                self.config.effective_lock_url,
                socket_timeout=10,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
        return self._redis

    def storage(self, server: ServerConfig) -> Storage:
        if server.name not in self._storages:
            self._storages[server.name] = open_storage(server)
        return self._storages[server.name]

    def lock(self, server: str, purpose: str) -> ServerLock:
        return open_lock(self.config, server, purpose, client=self.redis)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
        self._catalog, self._redis, self._storages = None, None, {}
