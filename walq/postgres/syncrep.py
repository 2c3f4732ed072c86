"""Is walq's receiver a synchronous standby? Reading ``synchronous_standby_names`` as PostgreSQL does.

pg_receivewal flushes (and tells the primary) after every message only with
``--synchronous``; the receiver passes it when the server's
``synchronous_standby_names`` names the receiver's ``application_name``
(Barman's streaming archiver does the same). PostgreSQL's grammar
(syncrep_gram.y, syncrep_scanner.l), in our words:

- ``name [, name ...]``: the first connected one is the synchronous standby
  (``FIRST 1``); ``N (names)`` and ``FIRST N (names)``: priority; ``ANY N (names)``: quorum;
- ``ANY`` and ``FIRST`` are keywords in any case, so a standby with such a name is
  written double-quoted; ``"..."`` takes anything, ``""`` inside is one quote;
- an unquoted name is letters, digits, ``_`` and ``$`` (not starting with a digit)
  or a number; ``*`` matches every standby;
- names are compared with the application_name case-insensitively, quoted or not.

Barman finds the names by cutting at the parentheses and compares them case-sensitively;
walq parses, so ``"FIRST"``, ``ANY 1 ("walq")`` and ``WALQ_RECEIVE_WAL`` are read right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypedDict

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | "(?P<quoted>(?:[^"]|"")*)"
  | (?P<word>[A-Za-z\x80-\U0010ffff_][A-Za-z\x80-\U0010ffff_0-9$]*)
  | (?P<number>[0-9]+)
  | (?P<punct>[*,()])
    """,
    re.VERBOSE,
)
KEYWORDS = ("ANY", "FIRST")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    """PostgreSQL's pg_strcasecmp folds ASCII letters only."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class SyncStandbys:
    """``synchronous_standby_names`` parsed: how many of which standbys a commit waits for."""

    method: str  # "priority" (a plain list, N (...), FIRST N (...)) or "quorum" (ANY N (...))
    num_sync: int
    names: tuple[str, ...]

    def priority(self, application_name: str) -> int:
        """PostgreSQL's sync_priority for a standby of this name: 0 when not named, 1 for
        every named one in a quorum, its 1-based place in the list otherwise."""
        for place, name in enumerate(self.names, start=1):
            if name == "*" or _ascii_lower(name) == _ascii_lower(application_name):
                return 1 if self.method == "quorum" else place
        return 0


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs; kinds: name, number, keyword, or the punctuation itself."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            what = "unterminated quoted name" if text[pos] == '"' else f"unexpected {text[pos]!r}"
            raise ValueError(f"{what} at position {pos + 1}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "space":
            continue
        if kind == "quoted":
            tokens.append(("name", match["quoted"].replace('""', '"')))
        elif kind == "word":
            word = match["word"]
            tokens.append(("keyword", word.upper()) if word.upper() in KEYWORDS else ("name", word))
        elif kind == "number":
            tokens.append(("number", match["number"]))
        else:
            punct = match["punct"]
            tokens.append(("name", "*") if punct == "*" else (punct, punct))
    return tokens


def parse_sync_standbys(setting: str) -> SyncStandbys | None:
    """``synchronous_standby_names`` as PostgreSQL reads it; None when empty (no synchronous
    replication). ValueError names what is wrong with a value PostgreSQL would refuse."""
    if setting == "":
        return None
    tokens = _tokens(setting)
    if not tokens:  # PostgreSQL refuses a value of spaces alone
        raise ValueError("no standby names")
    method, num = "priority", 1
    rest = tokens
    if tokens[0][0] == "keyword" or (len(tokens) > 1 and tokens[1][0] == "("):
        head = tokens[1:] if tokens[0][0] == "keyword" else tokens
        if len(head) < 2 or head[0][0] != "number" or head[1][0] != "(":
            raise ValueError("expected a number and '(' after ANY or FIRST (or before '(')")
        if tokens[-1][0] != ")":
            raise ValueError("the list of names is not closed with ')'")
        method = "quorum" if tokens[0] == ("keyword", "ANY") else "priority"
        num = int(head[0][1])
        rest = head[2:-1]
    names: list[str] = []
    expect_name = True
    for kind, value in rest:
        if expect_name and kind in ("name", "number"):
            names.append(value)
        elif not expect_name and kind == ",":
            pass
        else:
            hint = " (a keyword: double-quote a standby of that name)" if kind == "keyword" else ""
            raise ValueError(f"unexpected {value!r}{hint}")
        expect_name = not expect_name
    if expect_name:
        raise ValueError("a name is missing" if names else "no standby names")
    if num < 1:
        raise ValueError(f"the number of synchronous standbys ({num}) must be greater than zero")
    return SyncStandbys(method, num, tuple(names))


def names_standby(setting: str, application_name: str) -> bool:
    """Does ``synchronous_standby_names`` make a standby called ``application_name`` a
    (possibly potential) synchronous one? An unparsable setting names nobody."""
    try:
        parsed = parse_sync_standbys(setting)
    except ValueError:
        return False
    return parsed is not None and parsed.priority(application_name) > 0


class SyncView(TypedDict):
    """``walq status --json``'s ``synchronous``: the receiver as a synchronous standby."""

    application_name: str
    named: bool  # synchronous_standby_names names it (or says '*')
    synchronous_standby_names: str
    sync_state: str | None  # pg_stat_replication of its connection: sync, quorum, potential, async
    sync_priority: int | None
    started_synchronous: bool | None  # the running pg_receivewal got --synchronous


def sync_view(
    application_name: str,
    setting: str,
    sync_state: str | None,
    sync_priority: int | None,
    started_synchronous: bool | None,
) -> SyncView:
    return {
        "application_name": application_name,
        "named": names_standby(setting, application_name),
        "synchronous_standby_names": setting,
        "sync_state": sync_state,
        "sync_priority": sync_priority,
        "started_synchronous": started_synchronous,
    }


def sync_verdict(view: SyncView) -> tuple[bool, str]:
    """(ok, detail) for ``walq check``'s ``synchronous streaming`` line.

    Not being named is fine (Barman reports it as information): the receiver streams
    asynchronously. Being named is a promise to the primary, so it fails when the
    promise is not kept: no receiver connected (commits that need it wait), or a
    pg_receivewal started before the setting named it, without --synchronous (it
    reports a flush only when a segment ends, so commits wait for that).
    """
    name, setting = view["application_name"], view["synchronous_standby_names"]
    if not view["named"]:
        shown = f"{setting!r}" if setting else "empty"
        return True, f"no: asynchronous (synchronous_standby_names is {shown}, not naming {name})"
    state = view["sync_state"]
    if state is None:
        return False, (
            f"synchronous_standby_names names {name} but no receiver is connected: "
            "commits that need it wait"
        )
    if state == "async":
        return (
            False,
            f"synchronous_standby_names names {name} but PostgreSQL streams to it asynchronously",
        )
    if view["started_synchronous"] is False:
        return False, (
            f"synchronous_standby_names names {name} but pg_receivewal runs without "
            "--synchronous (started before the setting changed?): restart walq receive-wal"
        )
    priority = f", priority {view['sync_priority']}" if view["sync_priority"] else ""
    return True, f"yes: {state} standby{priority} ({name})"
