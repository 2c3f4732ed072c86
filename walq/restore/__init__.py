"""Restore: everything behind ``walq get-wal`` (PostgreSQL's restore_command).

- spool_hit: serve a prefetched WAL with a rename, before the full CLI loads;
- getwal: the full get-wal, from the spool or the archive;
- fetch: fetch one WAL from the archive into a path, verified (get-wal and prefetcher);
- prefetch: the background prefetcher that keeps the next segments in the spool;
- spool: the spool's coordination files (cheap to import, like spool_hit).

Nothing is imported here: the spool hit imports this package on every call.
"""
