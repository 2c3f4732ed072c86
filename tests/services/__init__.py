"""Real parts for the tests, shared with the benchmark (bench/) and the demo.

Service fixtures live in ``s3``, ``gpg`` and ``fleet``; tests/conftest.py registers
them with ``pytest_plugins``, so test modules ask for them by name and never import
them. Helpers that test modules import:

- ``pg``: throwaway PostgreSQL clusters, ``wait_for``, running as ``postgres``
- ``scratch``: directories the ``postgres`` OS user can enter
- ``config_file``: the one walq.toml writer (standard library only, for bench/)
- ``homes``: a walq installation under test (``WalqHome``, ``WALQ``, xlog.db names)
- ``pitr``: archiving primary, base backup, recovery through get-wal
- ``receiver``: ``walq receive-wal`` in the background
- ``s3``, ``gpg``, ``fleet``: SeaweedFS, a GnuPG keyring, Redis/catalog/Celery
- ``codec_tools``: the codecs' own command-line tools (gzip -dc, zstd -dc, ...)
- ``catalog_rows``: ``archived_info`` for tests that write catalog rows directly
"""
