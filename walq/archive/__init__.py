"""Archiving: from a WAL in incoming/ or streaming/ to storage and the catalog.

``scan`` finds WALs, ``job`` is the WalJob that carries one through the
``steps`` (prepare, encrypt, store, commit), ``policy`` decides what a failure
does to it, ``identity`` is the cluster its WAL must come from, ``dirs`` the
directories a server needs. ``embedded`` runs it all in-process (`walq
archive`), ``putwal`` is PostgreSQL's archive_command (``putwal_fast`` its
common case before the full CLI loads), ``retry`` puts failed WALs back in play. Fleet mode runs the same steps as Celery tasks (walq/fleet/).

Nothing is imported here: put-wal's fast path imports this package on every call.
"""
