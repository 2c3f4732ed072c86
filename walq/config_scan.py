"""The few config values a per-WAL fast path needs, read without the config model.

PostgreSQL starts one process per WAL for archive_command and restore_command, and
importing pydantic, pydantic-settings and tomllib costs more than the work itself.
get-wal's spool hit (walq.restore.spool_hit) and put-wal's fast path
(walq.archive.putwal_fast) read what they need here with a conservative line scan:
simple ``key = value`` lines whose answer is exactly tomllib's, or no answer at all
(None), and then the caller hands the call to the full CLI, which validates the
whole file. This module imports nothing but ``os``.
"""

# no `from __future__ import annotations`: one import fewer per call
import os

DEFAULT_HOME = "/var/lib/walq"  # walq.config.DEFAULT_HOME, as a string

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_BARE_KEY = _ALNUM | frozenset("_-")
_SERVER_CHARS = _ALNUM | frozenset("_-.")


def is_server_name(s: str) -> bool:
    """A name walq.config.check_server_name accepts (letters, digits, '_', '-', '.',
    at most 63, no '..'): the fast paths' check of a SERVER argument. A name it
    refuses goes to the full CLI, whose line explains why."""
    return 0 < len(s) <= 63 and s[0] in _ALNUM and set(s) <= _SERVER_CHARS and ".." not in s


def config_path(explicit: str | None) -> str:
    """--config, else WALQ_CONFIG, else ./walq.toml (walq.config.resolve_config_path)."""
    return explicit or os.environ.get("WALQ_CONFIG") or "walq.toml"


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def env_overrides(keys: frozenset[str]) -> bool:
    """Whether a WALQ_* variable sets one of these top-level keys (or a table under
    one), as pydantic-settings would read it: case-insensitively, '__' between levels.
    ``WALQ_HOME`` spelled exactly so is the caller's to read; other variables set
    keys a fast path does not read."""
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith("WALQ_") or name == "WALQ_HOME":
            continue
        if upper[5:].split("__", 1)[0].lower() in keys:
            return True
    return False


def scan_toml(
    text: str, wanted: frozenset[tuple[str, str]]
) -> tuple[dict[tuple[str, str], str | bool], frozenset[str]] | None:
    """The values of ``wanted`` keys, each ``(table, key)`` with table "" for the top
    level or a dotted name such as ``servers.pg1``, and the set of table headers seen;
    or None where the text is unusual enough that only tomllib can tell.

    A value is a string without escapes, or ``true``/``false``. The scan abstains on a
    multi-line string or array, an array of tables, a repeated header or key, a
    quoted or dotted key, a header that is not plain dotted bare keys, any line that
    is not ``key = value``, and a key that would define a wanted table inline
    (``servers = {...}``, ``pg1 = {...}`` under ``[servers]``). Keys left out are
    simply absent from the answer: their defaults are the caller's.
    """
    tables = {t for t, _ in wanted if t}
    found: dict[tuple[str, str], str | bool] = {}
    headers: set[str] = set()
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if '"""' in line or "'''" in line:
            return None
        if line.startswith("["):
            header = _header(line)
            if header is None or header in headers:
                return None
            headers.add(header)
            current = header
            continue
        key, sep, value = line.partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if value[:1] in "[{" and not _closes_on_line(value):
            return None  # a multi-line array or table: its lines could look like anything
        if not key or not set(key) <= _BARE_KEY:
            return None  # quoted or dotted keys: tomllib decides
        path = f"{current}.{key}" if current else key
        if any(t == path or t.startswith(path + ".") for t in tables):
            return None  # a wanted table defined by a value
        if (current, key) not in wanted:
            continue
        if (current, key) in found:
            return None
        parsed = _value(value)
        if parsed is None:
            return None
        found[(current, key)] = parsed
    return found, frozenset(headers)


def _header(line: str) -> str | None:
    """``[a.b-c]`` (plain bare keys, an optional comment after) -> "a.b-c"; else None."""
    if line.startswith("[["):
        return None
    end = line.find("]")
    if end < 0:
        return None
    name, rest = line[1:end], line[end + 1 :].strip()
    if rest and not rest.startswith("#"):
        return None
    parts = name.split(".")
    if not all(p and set(p) <= _BARE_KEY for p in parts):
        return None
    return name


def _value(value: str) -> str | bool | None:
    """A one-line string without escapes, or a boolean; None for anything else."""
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0 or (quote == '"' and "\\" in value[1:end]):
            return None
        result: str | bool = value[1:end]
        rest = value[end + 1 :].strip()
    else:
        word, _, rest = value.partition("#")
        word = word.strip()
        if word not in ("true", "false"):
            return None
        result, rest = word == "true", ""
    if rest and not rest.startswith("#"):
        return None
    return result


def _closes_on_line(value: str) -> bool:
    depth = 0
    for ch in value:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch in "\"'" or ch == "#":
            return False  # strings or comments inside: leave it to tomllib
    return depth == 0
