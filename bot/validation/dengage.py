"""D·engage data tables, UpsertData-Async: the vendor's rules, as its API page states them (docs/upstream-apis.md).

- The header line is separated by `;` or `,`: we pick the one whose titles match the table best.
- Every table column must be in the file (under its own name, or under the file header that
  `TableSchema.column_mapping` names for it: table column -> file header), in every row.
- Extra file columns that no table column maps to are an ERROR: the upstream matches file columns
  by header, so an extra column is either a typo of a real one or data that would be dropped.
- Primary-key values (and values of columns that are not nullable) must not be empty or blank.
- Typed columns (an empty value is always allowed in a nullable column):
    INTEGER   optional sign and ASCII digits: 42, -7, +3 (no spaces, decimals, thousands separators)
    DECIMAL   optional sign, digits with an optional dot fraction: 3.14, -0.5, .5, 10 (no exponent,
              no comma decimal separator, no thousands separators)
    BOOLEAN   true, false, 1, 0 in any letter case
    DATE, DATETIME  one of the twelve formats of the vendor page, with a real calendar date:
              yyyy-MM-dd, yyyy-MM-dd HH:mm, yyyy-MM-ddTHH:mm, yyyy-MM-dd HH:mm:ss, yyyy-MM-ddTHH:mm:ss,
              yyyy-MM-dd HH:mm:ss.f/.ff/.fff, yyyy-MM-ddTHH:mm:ss.f/.ff/.fff, yyyy-MM-ddTHH:mm:ssZ
    EMAIL     local@domain.tld: no spaces, exactly one @, a dot in the domain
    PHONE, TEXT  not checked (phone formats vary too much to refuse one safely)
- The table is not `master_contact` (the API refuses it).
- Rows are upserted: a primary key that repeats is a warning (D·engage keeps the last row),
  naming the line before it with that key; identical rows are no error either: with a key they
  are a repeated key, without one a warning that D·engage appends both.
- No value length limit of its own: the vendor page names none (only the request size).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from operator import itemgetter

from bot.schema import Column, ColumnType, TableSchema
from bot.validation import codes
from bot.validation.model import IssueCollector, Severity
from bot.validation.rules import TargetRules, check_header_names, near_miss, some, split_header_line

FORBIDDEN_TABLES = frozenset({"master_contact"})

_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_HHMM = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"
# Exactly the twelve formats: date; date[ T]HH:mm; date[ T]HH:mm:ss; date[ T]HH:mm:ss.f{1,3};
# dateTHH:mm:ssZ (Z only after a T).
DATETIME_RE = re.compile(rf"(?:{_DATE}(?:[ T]{_HHMM}(?::[0-5][0-9](?:\.[0-9]{{1,3}})?)?|T{_HHMM}:[0-5][0-9]Z)?)?")
INTEGER_RE = re.compile(r"(?:[+-]?[0-9]+)?")
DECIMAL_RE = re.compile(r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?")
BOOLEAN_RE = re.compile(r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)?")
EMAIL_RE = re.compile(r"(?:[^@\s]+@[^@\s]+\.[^@\s.]+)?")
_COMMA_DECIMAL = re.compile(r"[+-]?[0-9]+,[0-9]+")

_DATE_FORMATS = (
    "yyyy-MM-dd, yyyy-MM-dd HH:mm, yyyy-MM-dd HH:mm:ss, yyyy-MM-dd HH:mm:ss.fff (a T may replace the "
    "space; .f and .ff also work) or yyyy-MM-ddTHH:mm:ssZ, e.g. 2024-03-31 or 2024-03-31 14:05:00"
)
_TYPE_RULES: dict[ColumnType, tuple[re.Pattern[str], str, str]] = {
    ColumnType.INTEGER: (
        INTEGER_RE,
        codes.INVALID_INTEGER,
        "is not a whole number: write digits with an optional sign, e.g. 42 or -7 "
        "(no spaces, decimals or thousands separators)",
    ),
    ColumnType.DECIMAL: (
        DECIMAL_RE,
        codes.INVALID_DECIMAL,
        "is not a decimal number: write e.g. 3.14 or -0.5, with a dot as the decimal separator "
        "(no spaces, thousands separators or exponents)",
    ),
    ColumnType.BOOLEAN: (BOOLEAN_RE, codes.INVALID_BOOLEAN, "is not a boolean: write true or false (or 1 or 0)"),
    ColumnType.DATE: (DATETIME_RE, codes.INVALID_DATE, f"is not a date-time D·engage accepts: use {_DATE_FORMATS}"),
    ColumnType.DATETIME: (
        DATETIME_RE,
        codes.INVALID_DATE,
        f"is not a date-time D·engage accepts: use {_DATE_FORMATS}",
    ),
    ColumnType.EMAIL: (EMAIL_RE, codes.INVALID_EMAIL, "is not an email address: write it as name@example.com"),
}

RowCheck = Callable[[list[list[str]], int, Sequence[int] | None], None]


class DengageRules(TargetRules):
    multiline_values = True

    def __init__(self, schema: TableSchema, issues: IssueCollector) -> None:
        self.schema = schema
        self.issues = issues
        # file header for each table column
        self.headers = {c.name: schema.column_mapping.get(c.name, c.name) for c in schema.columns}
        self._checks: list[RowCheck] = []

    @property
    def needs_rows(self) -> bool:
        return bool(self._checks or self.key_indices)

    @property
    def duplicate_row(self) -> tuple[Severity, str]:  # type: ignore[override]
        if self.key_indices:
            return super().duplicate_row
        return (
            Severity.WARNING,
            "; the table has no primary key, so D·engage appends both rows: delete one unless the row "
            "is meant to be there twice",
        )

    def check_table(self, issues: IssueCollector) -> None:
        name = (self.schema.table_name or "").strip()
        if name.casefold() in FORBIDDEN_TABLES:
            issues.add(
                codes.FORBIDDEN_TABLE,
                Severity.ERROR,
                None,
                None,
                f"D·engage does not accept uploads to the {name} table (UpsertData excludes it): choose another table",
            )
        unknown = [c for c in self.schema.column_mapping if self.schema.column(c) is None]
        for column in unknown:
            issues.add(
                codes.BAD_COLUMN_MAPPING,
                Severity.ERROR,
                None,
                column,
                f"column_mapping maps {column!r}, which is not a column of the table "
                f"(columns: {some(self.schema.names)}): fix the tables file",
            )

    def choose_delimiter(self, header_line: str) -> str:
        wanted = set(self.headers.values())
        best, best_score = ",", (-1, -1, True)
        for delimiter in (",", ";"):
            fields = split_header_line(header_line, delimiter)
            if fields is None:
                continue
            score = (len(wanted.intersection(fields)), len(fields), delimiter == ",")
            if score > best_score:
                best, best_score = delimiter, score
        return best

    def check_header(self, header: list[str], delimiter: str, issues: IssueCollector) -> None:
        check_header_names(header, issues)
        position: dict[str, int] = {}
        for i, name in enumerate(header):
            position.setdefault(name, i)
        wanted = set(self.headers.values())
        missing = [c for c in self.schema.columns if self.headers[c.name] not in position]
        unknown = [h for h in dict.fromkeys(header) if h not in wanted and h.strip()]
        missing_headers = [self.headers[c.name] for c in missing]
        for column in missing:
            file_header = self.headers[column.name]
            mapped = f" (column_mapping maps table column {column.name!r} to it)" if file_header != column.name else ""
            hint = next((near_miss(h, [file_header]) for h in unknown if near_miss(h, [file_header])), "")
            issues.add(
                codes.MISSING_COLUMN,
                Severity.ERROR,
                1,
                file_header,
                f"the header has no column {file_header!r}{mapped}: add it; D·engage needs every column "
                f"of the table in every row{hint}",
            )
        for name in unknown:
            issues.add(
                codes.UNKNOWN_COLUMN,
                Severity.ERROR,
                1,
                name,
                f"column {name!r} is not a column of the table{self._table()} and no column_mapping names "
                f"it: delete the column, rename it to a table column, or map it in the tables file"
                f"{near_miss(name, missing_headers)} (table columns: {some(self.schema.names)})",
            )
        keys = []
        for column in self.schema.columns:
            index = position.get(self.headers[column.name])
            if index is None:
                continue
            if column.primary:
                keys.append(index)
            self._add_checks(column, index, self.headers[column.name])
        if keys and len(keys) == len(self.schema.primary_key):
            self.key_indices = tuple(keys)
            self.key_label = ", ".join(self.headers[k] for k in self.schema.primary_key)

    def _table(self) -> str:
        return f" {self.schema.table_name}" if self.schema.table_name else ""

    def check_rows(self, rows: list[list[str]], first_line: int, lines: Sequence[int] | None) -> None:
        for check in self._checks:
            check(rows, first_line, lines)

    # checks of one column -----------------------------------------------------------------

    def _add_checks(self, column: Column, index: int, header: str) -> None:
        get = itemgetter(index)
        issues = self.issues
        label = header if header == column.name else f"{header} (table column {column.name})"
        required = column.primary or not column.nullable
        if required:
            missing_code = codes.MISSING_PRIMARY_KEY if column.primary else codes.MISSING_VALUE
            what = "a primary-key column" if column.primary else "a column that may not be empty"
            missing_message = f"is empty, but {label} is {what}: fill in the value"

            def present(rows: list[list[str]], first_line: int, lines: Sequence[int] | None) -> None:
                values = list(map(get, rows))
                if all(map(str.strip, values)):
                    return
                for i, value in enumerate(values):
                    if not value.strip():
                        line = lines[i] if lines is not None else first_line + i
                        issues.add(
                            missing_code, Severity.ERROR, line, header, f"line {line}: the value {missing_message}"
                        )

            self._checks.append(present)
        rule = _TYPE_RULES.get(column.type)
        if rule is None:
            return
        pattern, type_code, explanation = rule
        fullmatch = pattern.fullmatch
        is_date = column.type in (ColumnType.DATE, ColumnType.DATETIME)
        type_name = column.type.value

        def typed(rows: list[list[str]], first_line: int, lines: Sequence[int] | None) -> None:
            values = list(map(get, rows))
            bad: list[tuple[int, str]] = []
            if not all(map(fullmatch, values)):
                for i, value in enumerate(values):
                    if not fullmatch(value) and not (required and not value.strip()):  # blank: reported above
                        extra = ""
                        if column.type is ColumnType.DECIMAL and _COMMA_DECIMAL.fullmatch(value.strip()):
                            extra = " (it uses a comma as the decimal separator: write a dot)"
                        elif value != value.strip() and fullmatch(value.strip()):
                            extra = " (it has spaces around it: remove them)"
                        bad.append((i, f"{explanation}{extra}"))
            if is_date:
                bad.extend(_impossible_dates(values, {i for i, _ in bad}))
            for i, why in sorted(bad):
                line = lines[i] if lines is not None else first_line + i
                issues.add(
                    type_code,
                    Severity.ERROR,
                    line,
                    header,
                    f"line {line}: the {label} value ({type_name}) {why}",
                    value=values[i][:200],
                )

        self._checks.append(typed)


def _impossible_dates(values: list[str], skip: set[int]) -> list[tuple[int, str]]:
    """Dates that match a format but do not exist (2024-02-30); checked once per distinct date."""
    days = {v[:10] for i, v in enumerate(values) if v and i not in skip} if skip else {v[:10] for v in values if v}
    wrong = set()
    for day in days:
        try:
            date.fromisoformat(day)
        except ValueError:
            wrong.add(day)
    if not wrong:
        return []
    return [
        (i, "is not a real calendar date (check the day of the month)")
        for i, v in enumerate(values)
        if v and i not in skip and v[:10] in wrong
    ]
