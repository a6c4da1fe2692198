"""The validation report: issues with a stable code, a severity, the physical line and the column.

An `Issue` is a small value: `code` never changes meaning (Slack messages, the JSON of
`tablebot validate` and tests key on it); `message` is for people and says what to do.
The collector keeps at most `max_issues` issues (the ones nearest the start of the file) but counts
every one, so a file with a million bad rows still gets an exact count per code without a million
objects in memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported when used: the Slack acknowledgement path imports this module
    import numpy as np
    import numpy.typing as npt


# Column titles the JSON report lists (a header of ten million empty titles is one 10 MB line).
MAX_COLUMNS_SHOWN = 1000


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
        """The JSON of `tablebot validate --format json`; `columns` holds at most MAX_COLUMNS_SHOWN
        titles (`column_count` says how many the header has, `columns_truncated` whether some were left out)."""
        return {
            "valid": self.valid,
            "rows": self.rows,
            "columns": self.columns[:MAX_COLUMNS_SHOWN],
            "column_count": len(self.columns),
            "columns_truncated": len(self.columns) > MAX_COLUMNS_SHOWN,
            "issues": [i.to_dict() for i in self.issues],
            "issue_counts": dict(self.issue_counts),
            "truncated": self.truncated,
            "delimiter": self.delimiter,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "sha256": self.sha256 or None,
        }

    def rows_for_csv(self) -> Iterator[tuple[int | None, str | None, str, str, str]]:
        """The kept issues as (line, column, code, severity, message): the "full report" CSV file."""
        for i in self.issues:
            yield (i.line, i.column, i.code, i.severity.value, i.message)


CSV_REPORT_HEADER = ("line", "column", "code", "severity", "message")


class IssueCollector:
    """Keeps at most `max_issues` issues, the ones nearest the start of the file; counts all of them.

    Which issues are kept depends only on where they are, never on the order in which the pass
    finds them (a fast and a careful reading of one file keep the same issues): the first
    `max_issues` by line (file-level issues first), while the first issue of every code is always
    kept, so a file with a thousand quoting errors still shows that it also has duplicates. The
    total never exceeds `max_issues`. Memory: a heap of `max_issues` issues and one per code.
    """

    def __init__(self, max_issues: int) -> None:
        self.max_issues = max(1, max_issues)
        # max-heap of the nearest issues: entries (-line key, -sequence, issue)
        self._heap: list[tuple[int, int, Issue]] = []
        self._first: dict[str, tuple[int, int, Issue]] = {}  # code -> (line key, sequence, issue)
        self._seq = 0
        self.counts: dict[str, int] = {}
        self.severity_counts: dict[str, int] = {}

    def _place(self, line: int | None) -> tuple[int, int]:
        return (-1 if line is None else line, self._seq)

    def wants(self, code: str, line: int | None) -> bool:
        """Whether an issue of this code on this line would be kept (lets callers skip building a message)."""
        key = self._place(line)
        first = self._first.get(code)
        if first is None or key < first[:2]:
            return True
        return len(self._heap) < self.max_issues or key < (-self._heap[0][0], -self._heap[0][1])

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
        self.counts[code] = self.counts.get(code, 0) + 1
        self.severity_counts[severity.value] = self.severity_counts.get(severity.value, 0) + 1
        self._keep(code, severity, line, column, message, value)

    def _keep(  # noqa: PLR0917
        self,
        code: str,
        severity: Severity,
        line: int | None,
        column: str | None,
        message: str,
        value: str | None = None,
    ) -> None:
        key = self._place(line)
        self._seq += 1
        first = self._first.get(code)
        heap = self._heap
        wanted_first = first is None or key < first[:2]
        wanted_heap = len(heap) < self.max_issues or key < (-heap[0][0], -heap[0][1])
        if not (wanted_first or wanted_heap):
            return
        issue = Issue(code, severity, line, column, message, value)
        if wanted_first:
            self._first[code] = (key[0], key[1], issue)
        if wanted_heap:
            entry = (-key[0], -key[1], issue)
            if len(heap) < self.max_issues:
                heapq.heappush(heap, entry)
            else:
                heapq.heapreplace(heap, entry)

    def add_many(  # noqa: PLR0917
        self,
        code: str,
        severity: Severity,
        lines: npt.NDArray[np.int64],
        column: str | None,
        message: Callable[[int], str],
        count: int | None = None,
    ) -> None:
        """Count `count` issues of one code (default: one a line); of `lines`, the candidates to keep,
        build (with `message(i)`) only those that are kept."""
        import numpy as np

        n = len(lines) if count is None else count
        if not n:
            return
        self.counts[code] = self.counts.get(code, 0) + n
        self.severity_counts[severity.value] = self.severity_counts.get(severity.value, 0) + n
        n = len(lines)
        index = np.argsort(lines, kind="stable")
        if n > self.max_issues + 1:
            index = index[: self.max_issues + 1]
        for i in index.tolist():
            line = int(lines[i])
            if not self.wants(code, line):
                break  # ascending lines: the rest would not be kept either
            self._keep(code, severity, line, column, message(i))

    @property
    def errors(self) -> int:
        return self.severity_counts.get(Severity.ERROR.value, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def sorted_issues(self) -> list[Issue]:
        """The kept issues by place in the file (file-level issues first), at most `max_issues`."""
        entries: dict[int, tuple[int, int, Issue]] = {}
        for neg_line, neg_seq, issue in self._heap:
            entries[-neg_seq] = (-neg_line, -neg_seq, issue)
        firsts = {seq for _, seq, _ in self._first.values()}
        for line_key, seq, issue in self._first.values():
            entries[seq] = (line_key, seq, issue)
        ordered = sorted(entries.values(), key=lambda e: (e[0], e[1]))
        excess = len(ordered) - self.max_issues
        if excess > 0:
            # drop the farthest issues that are not the first of their code
            kept: list[tuple[int, int, Issue]] = []
            for entry in reversed(ordered):
                if excess > 0 and entry[1] not in firsts:
                    excess -= 1
                    continue
                kept.append(entry)
            ordered = kept[::-1][: self.max_issues]
        return [issue for _, _, issue in ordered]
