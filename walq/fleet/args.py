"""Task arguments: what each Celery task takes, validated once, refused in one line.

A stage's argument is a WalJob (walq/archive/job.py, where the path checks
live), limited to the fields that stage takes: compress takes the scan's part,
encrypt and store the prepared part too, commit the stored part as well. A
refusal names at most a few problems, clipped, and nothing has been touched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from walq.archive.job import ServerName, WalJob, WalName
from walq.config import Config
from walq.errors import TaskArgumentError, clip

MAX_ERRORS_SHOWN = 5  # a refusal names this many problems, then counts the rest

SCANNED_REQUIRED = frozenset({"server", "wal", "source", "origin", "chain"})
SCANNED = SCANNED_REQUIRED | {"claimed"}
PREPARED = SCANNED | {
    "payload",
    "codec",
    "encrypted",
    "size",
    "checksum",
    "checksum_algorithm",
    "mtime",
    "sysid",
    "seg_size",
    "prepare_seconds",
}
STORED = PREPARED | {
    "key",
    "stored_size",
    "stored_codec",
    "stored_encrypted",
    "adopted",
    "store_seconds",
    "already_archived",
}
PREPARED_REQUIRED = SCANNED_REQUIRED | {
    "payload",
    "codec",
    "encrypted",
    "size",
    "checksum",
    "mtime",
}


class ServerArgs(BaseModel):
    """``walq.scan_server`` / ``walq.retry_failed``: a configured server."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    server: ServerName


class WalArgs(ServerArgs):
    """``walq.retry_wal``: a configured server and a WAL name."""

    wal: WalName


def parse_job(config: Config, data: Any, takes: frozenset[str], needs: frozenset[str]) -> WalJob:
    """A stage's argument as a WalJob: only the fields the stage ``takes``, with those it ``needs``."""
    if not isinstance(data, dict):
        return parse_args(WalJob, config, data)
    unknown = [(key, "unknown argument") for key in data if key not in takes]
    missing = [(key, "Field required") for key in sorted(needs - data.keys())]
    return parse_args(
        WalJob, config, {k: v for k, v in data.items() if k in takes}, missing + unknown
    )


def parse_args(
    model: type[BaseModel], config: Config, data: Any, more: list[tuple[str, str]] | None = None
) -> Any:
    """Validate a task's JSON argument; one clear line on failure, nothing touched."""
    if not isinstance(data, dict):
        raise TaskArgumentError(
            f"refused: {model.__name__} expects a JSON object, got {type(data).__name__}"
        )
    problems: list[tuple[str, str]] = []
    named = {key for key, _ in more or []}
    parsed = None
    try:
        parsed = model.model_validate(data, context={"config": config})
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            if err["type"] == "missing" and err["loc"] and err["loc"][0] in named:
                continue  # the stage's own list names it below
            loc = ".".join(_loc_part(p) for p in err["loc"]) or "arguments"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((loc, "unknown argument" if err["type"] == "extra_forbidden" else msg))
    problems += [(_loc_part(key), msg) for key, msg in more or []]
    if problems:
        parts = [f"{loc}: {msg}" for loc, msg in problems[:MAX_ERRORS_SHOWN]]
        if len(problems) > MAX_ERRORS_SHOWN:
            parts.append(f"and {len(problems) - MAX_ERRORS_SHOWN} more")
        raise TaskArgumentError("refused: " + "; ".join(parts)) from None
    return parsed


def _loc_part(part: str | int) -> str:
    """A field name as it is; an argument name someone made up, clipped."""
    text = str(part)
    return (
        text
        if len(text) <= 40 and text.isascii() and text.replace("_", "a").isalnum()
        else clip(text)
    )
