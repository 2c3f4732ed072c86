"""The ``walq`` console script (pyproject: ``walq = "walq.main:main"``).

restore_command starts one process per WAL, so get-wal's spool hit
(walq.restore.spool_hit) is tried before anything heavy is imported; every
other command, and every get-wal the spool cannot serve, goes to the full CLI.
"""

# no `from __future__ import annotations`: one import fewer per restore_command call
import sys

from walq.restore.spool_hit import spool_hit


def main() -> int:
    """The ``walq`` console script: a spool hit, else the full CLI."""
    try:
        served = spool_hit(sys.argv[1:])
    except ValueError:  # e.g. a NUL in a configured path: the full CLI explains it in one line
        served = None
    if served is not None:
        return served
    # imported here, not above: the spool hit must not pay for argparse and pydantic
    from walq.cli import main as cli_main

    return cli_main()
