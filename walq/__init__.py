"""walq: WAL archiving for PostgreSQL fleets, Barman-compatible layouts (see README.md).

Nothing is imported here: restore_command starts a process per WAL, so the
package itself must cost nothing to import (walq.main).
"""
