"""Streaming CSV validation: one pass, every rule of the target, a report with line and column.

report = validate(stream, schema, ValidationOptions(drop_duplicates=False), output=None)
report.valid, report.rows, report.issues, format_text(report, "hosts.csv")
"""

from bot.validation.engine import ValidationOptions, validate
from bot.validation.model import CSV_REPORT_HEADER, Issue, IssueCollector, Report, Severity
from bot.validation.text import format_text, summary_line

__all__ = [
    "CSV_REPORT_HEADER",
    "Issue",
    "IssueCollector",
    "Report",
    "Severity",
    "ValidationOptions",
    "format_text",
    "summary_line",
    "validate",
]
