"""What every target's rule set provides to the pass, and the header checks they share."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence

from bot.validation import codes
from bot.validation.model import IssueCollector, Severity


class TargetRules:
    """One target's rules. The pass does the structure (bytes, quoting, field counts, duplicates);
    a rule set says what the header must be and what the values of a well-formed row must be."""

    # BigPanda: 32,768; None: no limit on a value's size.
    value_byte_limit: int | None = None
    # Whether a quoted value may hold a line break.
    multiline_values: bool = True
    # Primary-key file column indices (set by check_header); repeated keys get a warning.
    key_indices: tuple[int, ...] = ()
    key_label: str = ""
    # How a row repeated exactly is reported: its severity and the advice after "line X repeats line Y exactly".
    duplicate_row: tuple[Severity, str] = (
        Severity.ERROR,
        ": delete one of them (or use --drop-duplicates to remove repeats)",
    )

    @property
    def needs_rows(self) -> bool:
        """Whether `check_rows` or the key need the parsed values of regular rows (the fast pass skips parsing otherwise)."""
        return bool(self.key_indices)

    def choose_delimiter(self, header_line: str) -> str:
        return ","

    def check_table(self, issues: IssueCollector) -> None:
        """Rules on the table itself, before any byte is read."""

    def check_header(self, header: list[str], delimiter: str, issues: IssueCollector) -> None:
        raise NotImplementedError

    def check_rows(self, rows: list[list[str]], first_line: int, lines: Sequence[int] | None) -> None:
        """Check well-formed rows (right field count) on lines first_line.. or on `lines`."""


def check_header_names(header: list[str], issues: IssueCollector) -> None:
    """Every column has a name, and no name appears twice."""
    for position, name in enumerate(header, start=1):
        if not name.strip():
            if not issues.wants(codes.EMPTY_HEADER, 1):
                issues.add(codes.EMPTY_HEADER, Severity.ERROR, 1, None, "")
                continue
            issues.add(
                codes.EMPTY_HEADER,
                Severity.ERROR,
                1,
                None,
                f"column {position} of the header (line 1) has no title: give it the schema's title "
                "or delete the column",
            )
    for name, count in Counter(header).items():
        if count > 1 and name.strip():
            if not issues.wants(codes.DUPLICATE_HEADER, 1):
                issues.add(codes.DUPLICATE_HEADER, Severity.ERROR, 1, name, "")
                continue
            issues.add(
                codes.DUPLICATE_HEADER,
                Severity.ERROR,
                1,
                name,
                f"the header has the title {name!r} {count} times: keep one column of that name "
                "(rename or delete the others)",
            )


def near_miss(name: str, candidates: Sequence[str]) -> str:
    """A hint when `name` differs from a candidate only by surrounding spaces or letter case."""
    stripped = name.strip()
    if stripped != name and stripped in candidates:
        return f" (the header has {name!r}, with spaces around it: remove the spaces)"
    folded = {c.casefold(): c for c in candidates}
    match = folded.get(stripped.casefold())
    if match is not None and match != name:
        return f" (the header has {name!r}: titles are case-sensitive, write {match!r})"
    return ""


def some(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def split_header_line(line: str, delimiter: str) -> list[str] | None:
    """The titles of a header line (leniently: the line may be the start of a multi-line header)."""
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return None
