"""``walq check``'s three outputs: one line per check (the default), one Nagios
plugin line (``--nagios``) and a JSON document (``--json``).

Nagios reads a plugin's first line of stdout and its exit code: 0 OK,
2 CRITICAL, 3 UNKNOWN (walq never reports 1, WARNING). A configuration error is
CRITICAL, the same exit code 2 as everywhere in walq: an archive_command reading
the same file fails too. UNKNOWN is for what walq could not judge: no server
configured, or an internal error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from walq.report.result import CheckResult, Measure

NAGIOS_OK, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 2, 3


def check_line(server: str, result: CheckResult) -> str:
    """The default output: ``pg1: storage: OK`` or ``pg1: no gaps: FAILED (detail)``."""
    detail = f" ({result.detail})" if result.detail else ""
    return f"{server}: {result.name}: {result.status}{detail}"


def _plugin_text(text: str) -> str:
    """One line without '|', which would start Nagios's performance data."""
    return " ".join(text.replace("|", "/").split())


def _perfdata(server: str, measure: Measure) -> str:
    """``label=value;warn;crit;min``, whole numbers (seconds and file counts)."""
    critical = "" if measure.critical is None else round(measure.critical)
    return f"{server}_{measure.label}={round(measure.value)};;{critical};0"


def nagios_error(message: str, unknown: bool = False) -> tuple[int, str]:
    """The plugin line and exit code for a run that produced no check lines."""
    if unknown:
        return NAGIOS_UNKNOWN, f"WALQ UNKNOWN - {_plugin_text(message)}"
    return NAGIOS_CRITICAL, f"WALQ CRITICAL - {_plugin_text(message)}"


@dataclass
class CheckReport:
    """Every server's check lines, in the order they ran."""

    servers: list[str] = field(default_factory=list)
    results: list[tuple[str, CheckResult]] = field(default_factory=list)

    def add(self, server: str, result: CheckResult) -> None:
        if server not in self.servers:
            self.servers.append(server)
        self.results.append((server, result))

    @property
    def ok(self) -> bool:
        """Nothing FAILED (SKIPPED lines do not count either way); nothing checked is not OK."""
        return bool(self.results) and all(r.ok for _, r in self.results)

    def nagios(self) -> tuple[int, str]:
        """``WALQ OK - 1 server, 14 checks, 1 skipped | perfdata`` or
        ``WALQ CRITICAL - pg1: archiver progress (...), ... | perfdata``."""
        if not self.results:
            return nagios_error("no servers checked", unknown=True)
        perf = " ".join(
            _perfdata(server, m) for server, result in self.results for m in result.measures
        )
        failed = [(s, r) for s, r in self.results if not r.ok]
        if failed:
            code = NAGIOS_CRITICAL
            text = "WALQ CRITICAL - " + ", ".join(
                f"{s}: {r.name}" + (f" ({r.detail})" if r.detail else "") for s, r in failed
            )
        else:
            code = NAGIOS_OK
            ran = sum(1 for _, r in self.results if not r.skipped)
            skipped = len(self.results) - ran
            n = len(self.servers)
            text = f"WALQ OK - {n} server{'s' if n != 1 else ''}, {ran} checks"
            text += f", {skipped} skipped" if skipped else ""
        return code, _plugin_text(text) + (f" | {perf}" if perf else "")

    def as_json(self) -> dict[str, object]:
        """``{"status": "ok"|"failed", "checks": [{server, check, status, detail}]}``."""
        return {
            "status": "ok" if self.ok else "failed",
            "checks": [
                {
                    "server": server,
                    "check": r.name,
                    "status": r.status.lower(),
                    "detail": r.detail,
                }
                for server, r in self.results
            ],
        }
