"""The fleet's expiry: what the ``walq.expire_server`` task runs (beat: every expire_interval).

Same code as ``walq expire``: under the server's fenced commit lock (the lock the
commit stage takes), so an archive chain's commit and an expiry never interleave,
and a stale holder's expiry is refused by the catalog's fence. A lock held by a
commit that does not let go within walq.retention.expire.LOCK_WAIT is not a
failure: the next beat tick tries again.
"""

from __future__ import annotations

from typing import Any

from walq.config import Config
from walq.errors import LockBusyError, LockHeldError
from walq.fleet.args import ServerArgs, parse_args
from walq.retention.expire import expire_server


def expire_task(config: Config, server_name: str) -> dict[str, Any]:
    """Validate the task's argument, expire, and say what happened in a JSON-able dict."""
    args: ServerArgs = parse_args(ServerArgs, config, {"server": server_name})
    try:
        result = expire_server(config, args.server)
    except (LockBusyError, LockHeldError) as exc:
        return {"server": args.server, "status": "busy", "reason": str(exc)}
    if result.policy is None:
        status = "nothing to do"
    elif result.refused is not None:
        status = "refused"
    else:
        status = "done"
    return {
        "server": args.server,
        "status": status,
        "policy": result.policy,
        "reason": result.refused,
        "deleted": len(result.deleted),
        "finished": len(result.finished),
        "held_back": len(result.held_back),  # kept because a pre_wal_delete_retry_script said so
    }
