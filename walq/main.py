"""The ``walq`` console script (pyproject: ``walq = "walq.main:main"``).

archive_command and restore_command start one process per WAL, so put-wal's
fast path (walq.archive.putwal_fast) and get-wal's spool hit
(walq.restore.spool_hit) are tried before anything heavy is imported; every
other command, and every call those cannot serve, goes to the full CLI.
"""

# no `from __future__ import annotations`: one import fewer per archive/restore call
import sys


def main() -> int:
    """The ``walq`` console script: a fast path where one applies, else the full CLI."""
    argv = sys.argv[1:]
    try:
        if "put-wal" in argv:
            from walq.archive.putwal_fast import put_wal_fast

            served = put_wal_fast(argv)
        else:
            from walq.restore.spool_hit import spool_hit

            served = spool_hit(argv)
    except ValueError:  # e.g. a NUL in a configured path: the full CLI explains it in one line
        served = None
    if served is not None:
        return served
    # imported here, not above: the fast paths must not pay for argparse and pydantic
    from walq.cli import main as cli_main

    return cli_main()
