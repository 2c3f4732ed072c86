"""The archived PostgreSQL server: the client (facts, slots, switch-wal), the
pg_receivewal supervisor, and the PostgreSQL-side lines of ``walq check``.

Nothing is imported here, so ``walq.postgres.client`` can be used without
loading the receiver.
"""
