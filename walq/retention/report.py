"""What ``walq expire`` and ``walq delete`` print for one server's run."""

from __future__ import annotations

import sys
from typing import TextIO

from walq.retention.expire import ExpiryResult
from walq.retention.policy import ExpiryPlan


def print_result(result: ExpiryResult, out: TextIO = sys.stdout) -> None:
    s = result.server
    lines: list[str] = []
    plan = result.plan
    if plan is None:
        lines += [f"{s}: {note}" for note in result.notes]
    if isinstance(plan, ExpiryPlan):
        known = len(plan.retained) + len(plan.expired) + len(plan.incomplete)
        lines.append(
            f"{s}: {plan.policy}: {known} base backup(s) known, {len(plan.retained)} retained, "
            f"{len(plan.expired)} expired, {len(plan.incomplete)} incomplete"
        )
        lines += [
            f"{s}:   retained {b.name} ({b.source}, timeline {b.timeline}, start {b.start_wal})"
            for b in plan.retained
        ]
        lines += [f"{s}:   timeline {tli}: {d.reason}" for tli, d in sorted(plan.timelines.items())]
    elif plan is not None:
        lines.append(f"{s}: delete --before {plan.before}")
        lines += [f"{s}:   {note}" for note in plan.notes]
    if result.refused is not None:
        lines.append(f"{s}: refused: {result.refused}")
    elif plan is not None:
        verb = "would delete" if result.dry_run else "deleted"
        held = len(result.held_back)
        lines.append(f"{s}: {verb} {len(plan.delete) - held} file(s), kept {len(plan.keep) + held}")
        if result.hook_stop:
            lines.append(f"{s}: {result.hook_stop}")
        if result.dry_run:
            lines += [f"{s}: would delete {name}" for name in plan.delete]
    if result.finished:
        verb = "would finish" if result.dry_run else "finished"
        lines.append(
            f"{s}: {verb} an interrupted expiry: {len(result.finished)} object(s) of expired rows"
        )
        if result.dry_run:
            lines += [f"{s}: would delete {name}" for name in result.finished]
    if result.xlogdb_lines:
        lines.append(f"{s}: xlogdb: {result.xlogdb_lines} line(s) removed")
    out.write("".join(f"{line}\n" for line in lines))
