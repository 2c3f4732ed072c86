"""Write a walq.toml: one writer for the tests and the benchmark.

Standard library only (no pytest, no walq), so ``bench/`` can import it
without the test stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def toml_value(value: object) -> str:
    """``value`` as a TOML value: booleans, numbers, inline tables, else a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + "}"
        )
    return json.dumps(
        str(value), ensure_ascii=False
    )  # a TOML basic string: JSON's escapes are TOML's


def write_walq_config(root: Path, servers: dict[str, dict[str, object]], **top: object) -> Path:
    """``root/walq.toml`` with ``home = root/home``, the top-level keys ``top`` and one
    ``[servers.NAME]`` table per server. A key whose value is None is left out (walq's
    default applies). The file is world-readable: archive_command may run as postgres."""
    lines = [f"home = {toml_value(root / 'home')}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in top.items() if v is not None]
    for name, settings in servers.items():
        lines.append(f"\n[servers.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items() if v is not None]
    path = root / "walq.toml"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path
