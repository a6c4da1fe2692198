"""BigPanda mapping-enrichment tables: the vendor's rules, as its API pages state them (docs/upstream-apis.md).

"No field longer than 32K": we read 32K as 32,768 bytes of the value encoded as UTF-8 (the lead's
decision). Counting bytes is the stricter reading, so a value that passes here also passes if
BigPanda counts 32,768 characters. Boundary: 32,768 bytes is accepted, 32,769 is an error.

The structure rules (one header line, no line breaks in values, every row as wide as the header,
no duplicate rows, LF endings and a final newline, at most 500 MB) are applied by the pass with
the limits this class declares; this class checks the header against the schema's titles.
"""

from __future__ import annotations

from bot.schema import TableSchema
from bot.validation import codes
from bot.validation.model import IssueCollector, Severity
from bot.validation.rules import TargetRules, check_header_names, near_miss, some

VALUE_BYTE_LIMIT = 32_768
MAX_RESULT_COLUMNS = 200  # organization limit: 200 mapping-enrichment result tags


class BigPandaRules(TargetRules):
    value_byte_limit = VALUE_BYTE_LIMIT
    multiline_values = False

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema

    def check_table(self, issues: IssueCollector) -> None:
        results = len(self.schema.result_columns)
        if results > MAX_RESULT_COLUMNS:
            issues.add(
                codes.TOO_MANY_RESULT_COLUMNS,
                Severity.WARNING,
                None,
                None,
                f"the schema has {results} result columns; a BigPanda organization may have at most "
                f"{MAX_RESULT_COLUMNS} mapping-enrichment result tags, so the upload may be refused: "
                "ask the BigPanda admin to reduce the result columns",
            )

    def check_header(self, header: list[str], delimiter: str, issues: IssueCollector) -> None:
        check_header_names(header, issues)
        titles = self.schema.names
        present = set(header)
        expected = set(titles)
        missing = [t for t in titles if t not in present]
        unknown = [h for h in dict.fromkeys(header) if h not in expected and h.strip()]
        semicolons = ""
        if len(header) == 1 and ";" in header[0]:
            semicolons = " The header looks separated by ';': BigPanda needs commas (',') between columns."
        for title in missing:
            hint = next((near_miss(h, [title]) for h in unknown if near_miss(h, [title])), "")
            issues.add(
                codes.MISSING_COLUMN,
                Severity.ERROR,
                1,
                title,
                f"the header has no column {title!r}, which the enrichment schema requires: "
                f"add it (every schema title must be a column){hint}.{semicolons}",
            )
        for name in unknown:
            issues.add(
                codes.UNKNOWN_COLUMN,
                Severity.ERROR,
                1,
                name,
                f"the header has column {name!r}, which is not a title of the enrichment schema: "
                f"rename it to a schema title or delete the column{near_miss(name, missing)} "
                f"(schema titles: {some(titles)})",
            )
        if not missing and not unknown and len(header) == len(titles) and header != titles:
            issues.add(
                codes.COLUMN_ORDER,
                Severity.WARNING,
                1,
                None,
                "the columns are in a different order from the schema (schema order: "
                f"{some(titles)}); BigPanda matches columns by title, so nothing needs to change",
            )
