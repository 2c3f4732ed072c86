"""Beat's scan tick for a whole worker group: which of its servers need a scan now.

One ``walq.scan_group`` message per group per ``scan_interval`` instead of one
``walq.scan_server`` per server: an idle server costs a few directory reads in
that one task (no message, no Redis command, no catalog), and only the servers
with something to do get their own ``walq.scan_server``, which runs in parallel on
the group's scan workers exactly as before. The look is the scan's own idle test
(walq.fleet.stages), so skipping a server skips only a scan that would have
returned nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from walq.errors import TaskArgumentError, clip
from walq.fleet.runtime import Runtime
from walq.fleet.stages import nothing_to_do
from walq.masking import mask_secrets

log = logging.getLogger("walq")


@dataclass
class Tick:
    """The servers of one group to scan now, and those whose look failed (scanned too:
    the scan reports the failure through its own retry policy and outcome counters)."""

    group: str
    scan: list[str] = field(default_factory=list)
    idle: int = 0
    failed: list[str] = field(default_factory=list)


def servers_to_scan(rt: Runtime, group: object) -> Tick:
    """Look at every server of ``group`` (in name order); one server's failing look
    neither hides the others nor fails the tick."""
    config = rt.config
    if not isinstance(group, str) or group not in config.worker_groups():
        raise TaskArgumentError(f"refused: group: no configured server names {clip(str(group))}")
    tick = Tick(group)
    for name, server in sorted(config.servers.items()):
        if server.worker_group != group:
            continue
        try:
            if nothing_to_do(rt, server):
                tick.idle += 1
                continue
        except Exception as exc:  # e.g. a directory walq cannot read: the scan says why
            log.warning("scan tick: %s: %s", name, clip(mask_secrets(str(exc))))
            tick.failed.append(name)
        tick.scan.append(name)
    return tick
