"""What `walq status` adds in fleet mode: queue depths, WALs in flight.

Read-only: it looks at the broker's queue lists (kombu's Redis layout, names in
walq.keys), the lock keys, and the catalog's claimed rows. It never imports
Celery, so `walq status` works on a host without workers.
"""

from __future__ import annotations

import time
from typing import Any

from walq import keys
from walq.catalog import WalState, open_catalog
from walq.config import Config
from walq.masking import mask_secrets

PRIORITY_STEPS = (3, 6, 9)  # kombu's default sub-queues besides the plain one


def queue_depths(client: Any, queues: tuple[str, ...] = keys.QUEUES) -> dict[str, int]:
    depths = {}
    for queue in queues:
        names = [queue] + [f"{queue}{keys.KOMBU_PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]
        depths[queue] = sum(int(client.llen(n)) for n in names)
    return depths


def fleet_status(config: Config) -> dict[str, object]:
    """Queue depth per queue, lock holders, and in-flight WALs per server."""
    broker_url, lock_url = config.broker_url, config.effective_lock_url
    if broker_url is None or lock_url is None:
        return {}  # embedded mode: no broker, no queues
    import redis

    result: dict[str, Any] = {}
    try:
        broker = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        result["queues"] = queue_depths(broker, keys.group_queues(config.worker_groups()))
        locks = redis.Redis.from_url(lock_url, socket_timeout=5, socket_connect_timeout=5)
        result["lock_holders"] = {
            name: (holder.decode() if isinstance(holder, bytes) else holder)
            for name in sorted(config.servers)
            if (holder := locks.get(keys.lock(name, "commit")))
        }
    except redis.RedisError as exc:
        result["broker_error"] = mask_secrets(str(exc))
    catalog = open_catalog(config)
    now = time.time()
    try:
        result["in_flight"] = {
            name: [
                {
                    "wal": r.name,
                    "since_s": round(now - (r.claimed_at or now), 1),
                    "stalled": bool(r.deadline is not None and r.deadline <= now),
                    "attempts": r.attempts,
                }
                for r in catalog.records(name, WalState.CLAIMED)
            ]
            for name in sorted(config.servers)
        }
    finally:
        catalog.close()
    return result
