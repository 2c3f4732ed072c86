"""One line of ``walq check``, shared by the archive-side checks (walq.report.checks)
and the PostgreSQL-side ones (walq.postgres.checks), which report.checks calls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """A number a check measured, for ``walq check --nagios``'s performance data:
    ``label`` is prefixed with the server's name; ``critical`` is the bound, if one is set."""

    label: str
    value: float
    critical: float | None = None


@dataclass(frozen=True)
class CheckResult:
    """One line of ``walq check``. A skipped check did not run: it is not OK, but not a failure either."""

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False
    measures: tuple[Measure, ...] = ()

    @classmethod
    def skip(cls, name: str, why: str) -> CheckResult:
        return cls(name, True, why, skipped=True)

    @property
    def status(self) -> str:
        return "SKIPPED" if self.skipped else "OK" if self.ok else "FAILED"
