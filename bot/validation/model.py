"""The validation report: issues with a stable code, a severity, the physical line and the column.

An `Issue` is a small value: `code` never changes meaning (Slack messages, the JSON of
`tablebot validate` and tests key on it); `message` is for people and says what to do.
The collector keeps at most `max_issues` issues but counts every one, so a file with a million
bad rows still gets an exact count per code without a million objects in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"  # blocks the upload
    FIXED = "fixed"  # repaired in the output stream; reported so nothing changes silently
    WARNING = "warning"  # worth knowing; does not block


@dataclass(frozen=True)
class Issue:
    code: str
    severity: Severity
    line: int | None
    column: str | None
    message: str
    # The offending value as the file has it, beside the message (which may quote it too): a
    # renderer shows it as data (Slack: escaped in a code span), never as part of a template.
    value: str | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity.value,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }
        if self.value is not None:
            found["value"] = self.value
        return found


@dataclass
class Report:
    valid: bool
    rows: int
    columns: list[str]
    issues: list[Issue]
    issue_counts: dict[str, int]
    bytes_read: int = 0
    bytes_written: int = 0
    sha256: str = ""
    delimiter: str = ","
    # True when `issues` holds fewer issues than were found (see issue_counts for all of them).
    truncated: bool = False
    severity_counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.WARNING]

    @property
    def fixes(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.FIXED]

    def count(self, severity: Severity) -> int:
        """Issues of one severity, counted before the cap."""
        return self.severity_counts.get(severity.value, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "rows": self.rows,
            "columns": list(self.columns),
            "issues": [i.to_dict() for i in self.issues],
            "issue_counts": dict(self.issue_counts),
            "truncated": self.truncated,
            "delimiter": self.delimiter,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "sha256": self.sha256,
        }

    def rows_for_csv(self) -> Iterator[tuple[int | None, str | None, str, str, str]]:
        """The kept issues as (line, column, code, severity, message): the "full report" CSV file."""
        for i in self.issues:
            yield (i.line, i.column, i.code, i.severity.value, i.message)


CSV_REPORT_HEADER = ("line", "column", "code", "severity", "message")


class IssueCollector:
    """Keeps the first `max_issues` issues (plus the first of every code), counts all of them.

    The first issue of each code is always kept, even past the cap, so a file with a thousand
    quoting errors still shows that it also has duplicates (found at the end of the pass).
    """

    def __init__(self, max_issues: int) -> None:
        self.max_issues = max(0, max_issues)
        self.kept: list[Issue] = []
        self.counts: dict[str, int] = {}
        self.severity_counts: dict[str, int] = {}
        self.dropped = 0

    def add(
        self,
        code: str,
        severity: Severity,
        line: int | None,
        column: str | None,
        message: str,
        *,
        value: str | None = None,
    ) -> None:
        seen = self.counts.get(code, 0)
        self.counts[code] = seen + 1
        self.severity_counts[severity.value] = self.severity_counts.get(severity.value, 0) + 1
        if len(self.kept) < self.max_issues or seen == 0:
            self.kept.append(Issue(code, severity, line, column, message, value))
        else:
            self.dropped += 1

    def wants(self, code: str) -> bool:
        """Whether an issue of this code would be kept (lets callers skip building a message)."""
        return len(self.kept) < self.max_issues or code not in self.counts

    @property
    def errors(self) -> int:
        return self.severity_counts.get(Severity.ERROR.value, 0)

    def sorted_issues(self) -> list[Issue]:
        # File-level issues (no line) first, then by line; the sort is stable, so issues of one
        # line keep the order in which the checks found them.
        return sorted(self.kept, key=lambda i: -1 if i.line is None else i.line)
