"""Findings: what `tlsrelay client check` reports, one per fault or success.

A finding names where the fault is (file and line, when it comes from a
file), says what is wrong in words a customer understands, and gives the fix
as something to paste (a main.cf setting, a map line or a command). Codes are
stable strings that tests and scripts match; the customer guide explains each.

This module only describes results; it never reads files or the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"
OK = "ok"

_MARK = {ERROR: "ERROR", WARNING: "WARN ", OK: "ok   "}


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    fix: str = ""
    file: str = ""
    line: int = 0

    @property
    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def as_dict(self) -> dict[str, object]:
        document = asdict(self)
        document["where"] = self.where
        return document


def error(code: str, message: str, fix: str = "", file: str = "", line: int = 0):
    return Finding(ERROR, code, message, fix, file, line)


def warning(code: str, message: str, fix: str = "", file: str = "", line: int = 0):
    return Finding(WARNING, code, message, fix, file, line)


def ok(code: str, message: str, file: str = "", line: int = 0) -> Finding:
    return Finding(OK, code, message, "", file, line)


def all_right(findings: Iterable[Finding]) -> bool:
    """True when nothing needs the customer's attention."""
    return all(f.severity == OK for f in findings)


def render(findings: Iterable[Finding]) -> str:
    """Human-readable report: one block per finding, faults with their fix."""
    lines = []
    for f in findings:
        where = f"{f.where}: " if f.where else ""
        lines.append(f"{_MARK[f.severity]} {where}{f.message} [{f.code}]")
        if f.fix:
            lines.extend(f"      fix: {part}" for part in f.fix.splitlines())
    return "\n".join(lines)
