"""One place that hides secrets in text walq prints or logs, and in libraries' log lines.

Cheap to import (``re`` and ``logging`` only): config load and put-wal use it.
It masks libpq ``password=...`` pairs (quoted or not, also ``PGPASSWORD=``) and
the password of any URL-like token ``scheme://user:password@host``, including
malformed ones (``postgresql//user:password@host``, no scheme at all): everything
between the user's ``:`` and the token's last ``@`` becomes ``********``.
Masking too much is harmless; leaking is not.
"""

from __future__ import annotations

import logging
import re

MASK = "********"
_PASSWORD_PAIR = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.I)
_TOKEN = re.compile(r"\S+")


def _mask_userinfo(token: str) -> str:
    if "@" not in token or ":" not in token:
        return token
    at = token.rfind("@")
    head = token[:at]
    if "://" in head:
        start = head.index("://") + 3
    elif "//" in head and head.index("//") < head.find(":"):
        start = head.index("//") + 2
    else:
        start = 0
    colon = head.find(":", start)
    if colon < 0:
        return token  # user@host: no password
    return token[: colon + 1] + MASK + token[at:]


def mask_secrets(text: str, *known: str) -> str:
    """``text`` with every password it may carry replaced by ``********``.

    ``known`` are secrets to hide wherever they appear, bare (libpq quotes a bad
    percent-escape of a password on its own): see ``url_passwords``.
    """
    for secret in sorted(filter(None, known), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PASSWORD_PAIR.sub(lambda m: m.group(1) + MASK, text)
    if "@" in text:
        text = _TOKEN.sub(lambda m: _mask_userinfo(m.group(0)), text)
    return text


def url_passwords(url: str) -> tuple[str, ...]:
    """The password of ``scheme://user:password@host``, as written and percent-decoded."""
    from urllib.parse import unquote

    scheme_end = url.find("://")
    rest = url[scheme_end + 3 :] if scheme_end >= 0 else url
    userinfo, at, _ = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return ()
    raw = userinfo.split(":", 1)[1]
    return (raw, unquote(raw)) if raw else ()


class MaskSecretsFilter(logging.Filter):
    """Rewrites a record's message with its secrets masked (psycopg_pool logs conninfo errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_FILTER = MaskSecretsFilter()


def mask_library_logs(*logger_names: str) -> None:
    """Attach the masking filter to these loggers (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
